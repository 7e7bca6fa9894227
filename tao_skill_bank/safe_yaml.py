"""YAML from users with bounds: size, nesting depth and the size of the document once aliases are expanded.

PyYAML's safe loader runs no code, but a few hundred bytes of nested aliases expand into billions of values
when a spec is copied, validated or printed. Specs need neither deep nesting nor many aliases.
"""
from __future__ import annotations

import yaml

MAX_SPEC_BYTES = 1 << 20        # a spec file; ours are a few kB
MAX_VALUE_BYTES = 64 << 10      # one override's value
MAX_DEPTH = 32                  # mappings and lists inside each other
MAX_NODES = 200_000             # values once every alias is expanded


class BoundError(ValueError):
    """YAML over one of the bounds; the message says which."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise BoundError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {})
        return node


def _expanded_size(node, memo: dict) -> int:
    """Values in the document with every alias expanded (shared nodes counted each time they are used)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once, then the loader's own error follows
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    if size > MAX_NODES:
        raise BoundError(f"expands to more than {MAX_NODES} values (nested aliases)")
    memo[key] = size
    return size


def load(text: str, max_bytes: int = MAX_SPEC_BYTES):
    """Parse YAML within the bounds; BoundError or yaml.YAMLError otherwise."""
    if len(text) > max_bytes:
        raise BoundError(f"{len(text)} bytes, over the {max_bytes}-byte limit")
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def clip(value, limit: int = 80) -> str:
    """repr of a value, cut for error messages (a user's value may be a megabyte long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
