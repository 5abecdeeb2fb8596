"""Untrusted YAML in, plain Python data out, or `ConfigRejected` saying why.

Configs reach the oracle from SV-Bench rows, from a teacher model being trained against it, and from
student patches, so the loader bounds everything it can be made to do:
- size: the text is refused over `max_bytes` before the parser sees it;
- nesting: the composed node graph deeper than `max_depth` is refused (and the parser's own
  RecursionError on absurd nesting is caught and reported the same way);
- alias expansion ("billion laughs"): PyYAML shares an anchored node between its aliases, so the
  composed graph stays small, but everything downstream (JSON for Rego, semgrep, a patch) sees the
  expanded tree. The expanded node count is computed on the shared graph with memoisation, in time
  linear in the distinct nodes, and refused over `max_nodes` before anything is constructed;
  a recursive alias (a node that contains itself) is refused outright;
- only SafeLoader tags: no Python objects are ever constructed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml's composer is ~10x faster; the pure-Python one behaves the same
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader


class ConfigRejected(ValueError):
    """A config the oracle refuses to read; the message says which limit it broke."""


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int = 256 * 1024  # SV-Bench's largest K8s row is ~6 KB; its largest file, 61 KB (TF)
    max_depth: int = 64  # K8s manifests nest ~12 deep
    max_nodes: int = 100_000  # expanded scalars + collections; a 6 KB manifest has ~500
    max_documents: int = 64


DEFAULT_LIMITS = YamlLimits()


def not_utf8(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8, or None. A JSON escape such as "\\ud800" decodes to a lone
    surrogate, which no file, scanner or tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate at character {exc.start}"
    return None


def check_size(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> None:
    if not isinstance(text, str):
        raise ConfigRejected(f"config is {type(text).__name__}, not text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigRejected(f"config is not UTF-8 text: {not_utf8(text)}") from None
    if size > limits.max_bytes:
        raise ConfigRejected(f"config is {size} bytes, over the {limits.max_bytes}-byte limit")


def _expanded_nodes(root: yaml.Node, limits: YamlLimits) -> int:
    """Node count of the fully expanded tree under `root`, without expanding it."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, depth, children pushed?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limits.max_nodes:
                raise ConfigRejected(f"config expands to over {limits.max_nodes} nodes (alias expansion)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigRejected("config has a recursive alias (a node that contains itself)")
        if depth > limits.max_depth:
            raise ConfigRejected(f"config nests deeper than {limits.max_depth} levels")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in on_path:
                raise ConfigRejected("config has a recursive alias (a node that contains itself)")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml_documents(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> list[Any]:
    """Every non-empty document of a YAML stream, as plain data; ConfigRejected when over a limit or
    not YAML at all (the message carries the parser's reason)."""
    check_size(text, limits)
    loader = _Loader(text)
    documents: list[Any] = []
    budget = limits.max_nodes
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            if len(documents) >= limits.max_documents:
                raise ConfigRejected(f"config has over {limits.max_documents} YAML documents")
            budget -= _expanded_nodes(node, limits)
            if budget < 0:
                raise ConfigRejected(f"config expands to over {limits.max_nodes} nodes (alias expansion)")
            documents.append(loader.construct_document(node))
    except ConfigRejected:
        raise
    except RecursionError:
        raise ConfigRejected(f"config nests deeper than {limits.max_depth} levels") from None
    except (yaml.YAMLError, TypeError, ValueError) as exc:  # TypeError: unhashable key ({{x}}: y)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigRejected(f"not YAML: {reason[:160]}") from None
    finally:
        loader.dispose()
    return [doc for doc in documents if doc is not None]
