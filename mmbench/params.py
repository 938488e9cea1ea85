"""Parameters a suite passes to a dataset loader or a method's constructor, checked against their annotations.

Strictly: a boolean is not an integer (`rank: true` is not 1), a string is not a boolean (`allow_pickle: "false"`
is refused, not truthy), no inf or nan. Values are checked, never converted, so a trial's id stays its config's.
"""
from __future__ import annotations

import functools
import typing
from typing import Any, Callable

from pydantic import ConfigDict, TypeAdapter, ValidationError

from mmbench.errors import UserError

_CONFIG = ConfigDict(strict=True, allow_inf_nan=False)


@functools.lru_cache(maxsize=None)
def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve (a user's module): those parameters go unchecked
        return {}


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=_CONFIG)
    except Exception:  # a type pydantic cannot check (a tensor, a module): left to the callee
        return None


def check(fn: Callable, params: dict[str, Any], what: str) -> None:
    """UserError (key ``params.NAME``) for the first parameter whose value does not fit ``fn``'s annotation."""
    hints = _hints(fn)
    for name, value in params.items():
        if name not in hints or value is None:  # None: "use the default", as methods.create drops it
            continue
        adapter = _adapter(hints[name])
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            expected = getattr(hints[name], "__name__", None) or str(hints[name]).replace("typing.", "")
            raise UserError(f"{what}: '{name}' must be {expected}, got {shown} ({err['msg'].lower()})",
                            key=f"params.{name}") from None
