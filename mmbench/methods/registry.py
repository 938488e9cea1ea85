"""The method registry: ``@register_method`` on a class, ``create(name, dims, out_dim, **hp)`` to build one.

Each entry records what the runner and the planner need to know without building a module: the family, the input
kind (vectors or sequences), how many modalities it takes, and which hyperparameter a suite's ``rank`` sweep sets.
"""
from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from torch import nn

from mmbench.errors import UserError, closest


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    family: str
    description: str
    inputs: str = "vectors"            # "vectors" | "sequences" | "both"
    min_modalities: int = 2
    max_modalities: int | None = None  # None: any number
    rank_param: str | None = None      # hyperparameter that a suite's `rank` axis sets
    hyperparams: tuple[str, ...] = field(default=())

    def check_modalities(self, n: int) -> None:
        hi = self.max_modalities
        if n < self.min_modalities or (hi is not None and n > hi):
            want = f"{self.min_modalities}" + ("+" if hi is None else ("" if hi == self.min_modalities else f"-{hi}"))
            raise UserError(f"method '{self.name}' takes {want} modalities, got {n}")


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(name: str, *, family: str, inputs: str = "vectors", min_modalities: int = 2,
                    max_modalities: int | None = None, rank_param: str | None = None) -> Callable[[type], type]:
    """Class decorator. The description is the first line of the class docstring."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' registered twice")
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(
            name=name, cls=cls, family=family, description=doc[0] if doc else "", inputs=inputs,
            min_modalities=min_modalities, max_modalities=max_modalities, rank_param=rank_param,
            hyperparams=_hyperparams(cls))
        cls.method_name = name
        return cls

    return deco


def _hyperparams(cls: type) -> tuple[str, ...]:
    sig = inspect.signature(cls.__init__)
    return tuple(p for p in sig.parameters if p not in ("self", "dims", "out_dim")
                 and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD)


def available(pattern: str = "*") -> list[str]:
    """Registered method names, sorted, optionally filtered by a glob pattern."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def info(name: str) -> MethodInfo:
    """The registry entry of a method, or of a user's ``package.module:ClassName``."""
    if ":" in name:
        return _user_method(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown method '{name}'{closest(name, _REGISTRY)}") from None


def create(name: str, dims: Sequence[int], out_dim: int, **hyperparams) -> nn.Module:
    """Build a fusion module. Hyperparameters left as None are dropped so the class's defaults apply."""
    entry = info(name)
    dims = [int(d) for d in dims]
    if any(d <= 0 for d in dims):
        raise UserError(f"modality dims must be positive, got {dims}")
    if out_dim <= 0:
        raise UserError(f"out_dim must be positive, got {out_dim}")
    entry.check_modalities(len(dims))
    hp = {k: v for k, v in hyperparams.items() if v is not None}
    unknown = sorted(set(hp) - set(entry.hyperparams))
    if unknown and not _takes_var_kwargs(entry.cls):
        raise UserError(f"method '{entry.name}' has no hyperparameter '{unknown[0]}'"
                        f"{closest(unknown[0], entry.hyperparams)}; it takes: {', '.join(entry.hyperparams) or 'none'}")
    try:
        return entry.cls(dims, out_dim, **hp)
    except (ValueError, TypeError) as exc:
        raise UserError(f"method '{entry.name}': {exc}") from None
    except (Exception, SystemExit) as exc:  # a user's constructor calling sys.exit() is its error too
        if ":" not in entry.name:  # a built-in failing otherwise is a bug in mmbench: let it show
            raise
        raise UserError(f"method '{entry.name}': its constructor raised {type(exc).__name__}: {exc}") from None


def _takes_var_kwargs(cls: type) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


# Folders searched for a user's module before the current directory: the suite's (set by ``search_modules_in``). Kept
# in the environment so that spawned worker processes resolve a suite's modules the same way.
MODULE_DIRS_ENV = "MMBENCH_MODULE_DIRS"


def search_modules_in(folder: str | os.PathLike) -> None:
    """User modules a suite names resolve against ``folder`` (the suite's) first, then the current directory."""
    dirs = [str(os.path.abspath(folder)), *filter(None, os.environ.get(MODULE_DIRS_ENV, "").split(os.pathsep))]
    os.environ[MODULE_DIRS_ENV] = os.pathsep.join(dict.fromkeys(dirs))


def _module_dirs() -> list[str]:
    return list(dict.fromkeys([*filter(None, os.environ.get(MODULE_DIRS_ENV, "").split(os.pathsep)), os.getcwd()]))


def _import_user(mod_name: str):
    """Import a user's module, its top-level package taken from the first of the suite's folder and the current
    directory that holds it (else from sys.path as usual). That folder stays at the end of sys.path, so the module's
    own sibling imports work without it shadowing any installed package."""
    top = mod_name.partition(".")[0]
    if top not in sys.modules:
        importlib.invalidate_caches()
        for d in _module_dirs():
            if os.path.isfile(os.path.join(d, top + ".py")) or os.path.isdir(os.path.join(d, top)):
                if d not in sys.path:
                    sys.path.append(d)
                sys.path.insert(0, d)  # this one import: the suite's folder before anything else
                try:
                    importlib.import_module(top)
                finally:
                    sys.path.remove(d)  # the first occurrence: the one just inserted
                break
    return importlib.import_module(mod_name)


def _user_method(spec: str) -> MethodInfo:
    """Import ``package.module:ClassName`` (only when a suite names it) and check the interface."""
    mod_name, _, cls_name = spec.partition(":")
    try:
        module = _import_user(mod_name)
    except (Exception, SystemExit) as exc:  # any import-time failure (a sys.exit() too) is the user's module
        where = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == mod_name.partition(".")[0]:
            where = f" (looked in {', '.join(_module_dirs())} and PYTHONPATH)"
        raise UserError(f"cannot import '{mod_name}' for method '{spec}': {type(exc).__name__}: {exc}{where}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
        raise UserError(f"module '{mod_name}' has no class '{cls_name}'{closest(cls_name, classes)}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"'{spec}' is not a torch.nn.Module subclass")
    params = list(inspect.signature(cls.__init__).parameters)[1:3]
    if params != ["dims", "out_dim"]:
        raise UserError(f"'{spec}' must take (dims, out_dim, **hyperparams) in its constructor")
    if cls.forward is nn.Module.forward:
        raise UserError(f"'{spec}' does not define forward(xs)")
    entry = MethodInfo(name=spec, cls=cls, family=str(getattr(cls, "family", "user")),
                       description=(cls.__doc__ or "").strip().split("\n")[0],
                       inputs=getattr(cls, "inputs", "vectors"),
                       min_modalities=getattr(cls, "min_modalities", 2),
                       max_modalities=getattr(cls, "max_modalities", None),
                       rank_param=getattr(cls, "rank_param", None), hyperparams=_hyperparams(cls))
    _check_declared(entry)
    return entry


def _check_declared(e: MethodInfo) -> None:
    """A user class's optional attributes, checked so that a typo is an error here rather than a wrong plan."""
    if e.inputs not in ("vectors", "sequences", "both"):
        raise UserError(f"'{e.name}': inputs must be 'vectors', 'sequences' or 'both', got {e.inputs!r}")
    lo, hi = e.min_modalities, e.max_modalities
    if not isinstance(lo, int) or lo < 1 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
        raise UserError(f"'{e.name}': min_modalities/max_modalities must be integers with 1 <= min <= max, "
                        f"got {lo!r}/{hi!r}")
    if e.rank_param is not None and e.rank_param not in e.hyperparams:
        raise UserError(f"'{e.name}': rank_param {e.rank_param!r} is not a constructor argument "
                        f"(it takes: {', '.join(e.hyperparams) or 'none'})")
