"""A bounded YAML loader for config files: a hostile or broken file costs milliseconds.

PyYAML's SafeLoader is safe against code execution but not against size: nine anchors that
each repeat the one before ("billion laughs") build a tiny node graph that every later walk
(validation, ``json.dumps`` of ``extra_body``) expands to billions of items; its composer
recurses once per nesting level (20,000 ``[`` is a RecursionError); a 5,000-digit integer is a
ValueError; duplicate keys are silently merged; dates, ``!!binary`` and ``!!set`` values are
Python objects no config key can use. This loader refuses all of these as YAML errors with a
line, so ``config check`` and every command report them in one sentence.
"""

from __future__ import annotations

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

MAX_BYTES = 1 << 20
"""A config file is a few KB; anything near a MB is not one."""
MAX_DEPTH = 48
"""Nesting levels (mappings and lists); the config itself needs 4."""
MAX_ALIASES = 256
MAX_NODES = 50_000
"""Values after expanding aliases: the whole documented config is ~300."""
MAX_INT_DIGITS = 30

_REFUSED_TAGS = {
    "tag:yaml.org,2002:binary": "binary data",
    "tag:yaml.org,2002:set": "a set",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:omap": "an ordered map",
    "tag:yaml.org,2002:pairs": "a list of pairs",
}


class LineMapping(dict):
    """A mapping that remembers the line of each key (``lines``), for error messages."""

    lines: dict


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader with limits on depth, aliases and size; plain JSON-like values only.

    Dates stay strings (``2024-01-01`` is text to every config key); explicit ``!!binary``,
    ``!!set``, ``!!timestamp`` ... are refused. ``duplicates`` collects ``(key, line,
    first_line)`` for keys given twice in one mapping.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self.duplicates: list[tuple[str, int, int]] = []

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ComposerError(None, None, f"more than {MAX_ALIASES} aliases (*name): "
                                    "refused as a possible alias bomb",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_size(node)
        return node


# Implicit dates off: the resolver table is per class, so copy it without timestamps.
BoundedLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_size(root: Node) -> None:
    """Count values as a walk that expands aliases would see them, without expanding."""
    memo: dict[int, int] = {}

    def count(node: Node) -> int:
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = 1  # a cycle (an alias inside its own anchor) counts once
        if isinstance(node, MappingNode):
            total = 1 + sum(count(k) + count(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(count(v) for v in node.value)
        else:
            total = 1
        memo[id(node)] = min(total, MAX_NODES + 1)
        return memo[id(node)]

    if count(root) <= MAX_NODES:
        return
    node = root  # point at the innermost value that alone is too big
    while True:
        children = ([x for kv in node.value for x in kv] if isinstance(node, MappingNode)
                    else node.value if isinstance(node, SequenceNode) else [])
        big = next((c for c in children if memo.get(id(c), 0) > MAX_NODES), None)
        if big is None:
            break
        node = big
    raise ComposerError(None, None, f"expands to more than {MAX_NODES} values (aliases "
                        "repeating aliases): refused as an alias bomb", node.start_mark)


def _construct_mapping(loader: BoundedLoader, node: MappingNode) -> LineMapping:
    seen: dict = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode):
            raise ConstructorError(None, None, "a key must be a plain word, not a list or "
                                   "mapping", key_node.start_mark)
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            loader.duplicates.append((key_node.value, line, seen[key_node.value]))
        else:
            seen[key_node.value] = line
    loader.flatten_mapping(node)
    result = LineMapping()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(None, None, "a key must be a plain word",
                                   key_node.start_mark) from None
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_int(loader: BoundedLoader, node: ScalarNode) -> int:
    digits = sum(c.isalnum() for c in node.value)
    if digits > MAX_INT_DIGITS:
        raise ConstructorError(None, None, f"an integer of {digits} digits is not a config "
                               "value", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _refuse(loader: BoundedLoader, node: Node):
    what = _REFUSED_TAGS.get(node.tag, node.tag)
    raise ConstructorError(None, None, f"{what} ({node.tag.rsplit(':', 1)[-1]}) is not a config "
                           "value: use a string, number, true/false, null, list or mapping",
                           node.start_mark)


BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
for _tag in _REFUSED_TAGS:
    BoundedLoader.add_constructor(_tag, _refuse)


def load(text: str) -> tuple[object, list[tuple[str, int, int]]]:
    """Parse one YAML document within the limits: ``(data, duplicate keys)``.

    Raises ``yaml.YAMLError`` (with ``problem_mark`` where there is a place to point at).
    """
    if len(text) > MAX_BYTES:
        raise yaml.YAMLError(f"the file has {len(text)} characters; a config file is at most "
                             f"{MAX_BYTES}")
    try:
        loader = BoundedLoader(text)
        try:
            return loader.get_single_data(), loader.duplicates
        finally:
            loader.dispose()
    except ReaderError as exc:  # a control character: no line in PyYAML's error, so add one
        at = exc.position
        line = text.count("\n", 0, at)
        mark = Mark("<config>", at, line, at - (text.rfind("\n", 0, at) + 1), None, None)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1]
                                                                        or "?")
        raise ConstructorError(None, None, f"character U+{code:04X} is not "
                               "allowed in YAML text (is this a binary file?)", mark) from None
