"""Reading YAML we are given (recipes, protocols, specs, arena configs, question sets), bounded.

`safe_load` is not enough: an alias bomb (a few lines whose anchors nest) expands to gigabytes
once the data is copied, and a deeply nested document overflows Python's stack. Here YAML is read
with SafeLoader plus limits on size, aliases and nesting depth, and dates stay strings (a recipe
has no dates; `seed: 2024-01-01` is then a clear type error, not a `datetime`). Every failure is
a `YamlError` naming the source and, where YAML knows it, the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from em_organisms.errors import EmOrganismsError

MAX_BYTES = 2_000_000  # the largest shipped YAML (a question set) is a few dozen KB
MAX_ALIASES = 100
MAX_DEPTH = 50
MAX_NODES = 200_000  # values once aliases are expanded (what a copy of the data would hold)


class YamlError(EmOrganismsError, ValueError):
    """A YAML file or value that cannot be read; says where and why."""


class _Loader(yaml.SafeLoader):
    max_aliases = MAX_ALIASES
    max_depth = MAX_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: more than {self.max_aliases} aliases (the limit, "
                    "yaml_files.MAX_ALIASES)"
                )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: nested deeper than {self.max_depth} levels (the "
                    "limit, yaml_files.MAX_DEPTH)"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            size = _expanded_size(node, {})
            if size > MAX_NODES:
                raise yaml.YAMLError(
                    f"{size} values once its aliases are expanded, more than {MAX_NODES} (the "
                    "limit, yaml_files.MAX_NODES)"
                )
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values NODE stands for with every alias copied out (shared nodes counted once
    per use, computed once); depth is bounded by MAX_DEPTH."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


# Dates and times stay strings: drop the timestamp resolver SafeLoader inherits.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml_text(text: str, source: str) -> Any:
    """TEXT parsed as YAML within the limits; SOURCE names it in errors."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{source}: {len(text)} characters, more than a YAML file here may hold "
                        f"({MAX_BYTES}, yaml_files.MAX_BYTES)")  # fmt: skip
    try:
        loader = _Loader(text)  # its reader refuses characters YAML cannot hold (a lone surrogate)
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: not valid YAML: {_one_line(err)}") from None
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise YamlError(f"{where}: not valid YAML: {_one_line(err.problem or err)}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: not valid YAML: {_one_line(err)}") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply to read") from None
    except ValueError as err:  # a number longer than Python reads (4300 digits)
        raise YamlError(f"{source}: not valid YAML: {str(err).split(';')[0]}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """PATH's YAML within the limits; a file that is not UTF-8 text is a YamlError too."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(
                f"{path}: {size} bytes, more than a YAML file here may hold ({MAX_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise YamlError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise YamlError(f"{path}: cannot be read ({err.strerror or err})") from None
    return load_yaml_text(text, str(path))


def _one_line(problem: object) -> str:
    return " ".join(str(problem).split())
