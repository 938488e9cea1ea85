"""Reading YAML a user hands us (suites, manifests) with bounds, so a hostile file is one line and not a hang.

Everything is checked as the file is composed, before any value is built or validated:
- size (MAX_BYTES), encoding (UTF-8 text, no NUL bytes);
- nesting depth while composing (PyYAML's composer recurses: thousands of levels end in RecursionError);
- aliases and the size the document expands to (a "billion laughs" is a few hundred bytes of aliases of aliases;
  every later walk of the data — line index, validation, copies — pays the expanded size), and aliases that
  refer to themselves;
- a key given twice in one mapping (YAML keeps the last one silently);
- numbers a program cannot use: inf/nan, and integers beyond 64 bits.
"""
from __future__ import annotations

import math

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from mmbench.errors import UserError

MAX_BYTES = 1 << 20      # a suite is a few KiB; a manifest less
MAX_DEPTH = 64           # nesting levels
MAX_ALIASES = 1_000
MAX_NODES = 100_000      # values once every alias is expanded
MAX_INT = 2 ** 63 - 1

_FLOAT = "tag:yaml.org,2002:float"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"


def decode(data: bytes, file: str) -> str:
    """UTF-8 text (a BOM is allowed) or a UserError naming the first bad byte's line."""
    if len(data) > MAX_BYTES:
        raise UserError(f"file is {len(data):,} bytes; a YAML file here may be at most {MAX_BYTES:,}", file=file)
    nul = data.find(b"\0")
    if nul >= 0:
        raise UserError("a binary file, not YAML text (NUL byte)", file=file, line=data.count(b"\n", 0, nul) + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded (save the file as UTF-8)",
                        file=file, line=data.count(b"\n", 0, exc.start) + 1) from None


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream, file: str):
        super().__init__(stream)
        self._file, self._depth, self._aliases = file, 0, 0

    def _refuse(self, message: str, mark) -> UserError:
        return UserError(message, file=self._file, line=mark.line + 1 if mark else None)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise self._refuse(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._refuse(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple, int] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:
                    raise UserError(f"key '{key.value}' is given twice in one mapping (lines "
                                    f"{seen[key.tag, key.value]} and {line})", file=self._file, line=line)
                seen[key.tag, key.value] = line
        return node


def _check_graph(root, loader: _BoundedLoader, file: str) -> None:
    """Expanded size, cycles and numbers, in one pass over the distinct nodes (iterative: aliases can chain)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            kids = _children(node)
            size[nid] = 1 + sum(size[id(k)] for k in kids)
            if size[nid] > MAX_NODES:
                raise UserError(f"expands to more than {MAX_NODES:,} values (aliases of aliases?)", file=file,
                                line=node.start_mark.line + 1)
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise UserError("an alias refers to the collection that contains it", file=file,
                            line=node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            _check_number(node, loader, file)
            size[nid] = 1
            continue
        on_path.add(nid)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise UserError("an alias refers to the collection that contains it", file=file,
                                line=kid.start_mark.line + 1)
            if id(kid) not in size:
                stack.append((kid, False))


def _children(node) -> list:
    if isinstance(node, MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_number(node: ScalarNode, loader: _BoundedLoader, file: str) -> None:
    if node.tag == _FLOAT:
        value = loader.construct_yaml_float(node)
        if not math.isfinite(value):
            raise UserError(f"'{node.value}' is not a finite number", file=file, line=node.start_mark.line + 1)
    elif node.tag == _INT:
        value = loader.construct_yaml_int(node)
        if abs(value) > MAX_INT:
            raise UserError(f"'{node.value[:40]}' is too large (integers here are 64-bit)", file=file,
                            line=node.start_mark.line + 1)


def load(text: str, file: str):
    """(node, data): the composed node (for line numbers; None for an empty file) and the built value."""
    loader = _BoundedLoader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_graph(node, loader, file)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


def load_file(path, file: str | None = None):
    """(node, data) of a YAML file, every bound checked; UserError for a missing or unreadable file."""
    from pathlib import Path

    p, shown = Path(path), file or str(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"file is {size:,} bytes; a YAML file here may be at most {MAX_BYTES:,}", file=shown)
        with open(p, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError("no such file", file=shown) from None
    except IsADirectoryError:
        raise UserError("is a directory, not a file", file=shown) from None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", file=shown) from None
    return load(decode(data, shown), shown)
