"""YAML that a user sends, read within bounds: config files, `config_yaml` over the wire, and the
values of `--set` / `overrides`.

Bounded before anything is expanded, while the document is composed: at most MAX_TEXT_CHARS of
text, MAX_ALIASES aliases (`*name`), MAX_DEPTH levels of nesting, numbers of at most
MAX_NUMBER_CHARS characters, and at most MAX_VALUES values and MAX_CHARS characters of strings
counted with every alias expanded (a value an alias repeats counts each time; an alias inside
its own anchor is refused). A billion-laughs document is refused after composing a few
thousand nodes, never expanded. `check_bounds` applies the same size and depth bounds to a
value already loaded (a config after its overrides are merged) and refuses integers outside
int64 (the widest integer of the wire). Refusals are `YamlRefused` (a ConfigError) naming where
(`--config FILE`, `config_yaml`, `overrides[2]`) and the key path, with values clipped.
"""

from __future__ import annotations

from typing import Any

import yaml

from rankitect.errors import ConfigError

MAX_TEXT_CHARS = 262_144  # of one document, or a config and all its overrides (a config is ~1 KB)
MAX_ALIASES = 64
MAX_DEPTH = 32  # levels of nesting below the document's own value
MAX_VALUES = 100_000  # scalars, lists and mappings (keys included), aliases expanded
MAX_CHARS = 1_000_000  # characters of all scalars, aliases expanded
MAX_NUMBER_CHARS = 100  # of one int or float scalar (int64 needs 20; "1:2:3..." grows quadratically)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SHOWN = 80  # characters of a key or value echoed in a message
_SELF = object()  # check_bounds: the step to a scalar that is the whole value


def clipped(text: str, limit: int = _SHOWN) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class YamlRefused(ConfigError):
    """Text or a value over the bounds: `where` (the source: a flag or a request field) and
    `detail` (the key path, if any, and why); str() is `where: detail`."""

    def __init__(self, where: str, detail: str) -> None:
        self.where, self.detail = where, detail
        super().__init__(f"{where}: {detail}")


class YamlInvalid(YamlRefused):
    """Text that is not YAML (a syntax error, a date that does not exist, ...)."""


class _Over(Exception):
    """Raised inside the loader; `load_yaml` adds where and the key path."""

    def __init__(self, detail: str, mark: Any = None) -> None:
        super().__init__(detail)
        self.path: str | None = None
        self.detail = detail + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")


_BOUNDS = (f"a config has at most {MAX_DEPTH} levels, {MAX_ALIASES} aliases, {MAX_VALUES:,} values and "
           f"{MAX_CHARS:,} characters of text, aliases expanded")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader counting, as it composes, aliases, depth and the expanded size of every node."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = self._depth = self._values = self._chars = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> its (values, chars), expanded
        self._path: list[str] = []  # keys and [indexes] down to the node being composed

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        """A date or time as YAML reads it; one that is no real date (2014-01-33) stays the text
        it is, so that the config's own checks name its key (YAML's error names none)."""
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)

    def key_path(self) -> str:
        """The key path of the node being composed, e.g. `budget.trials` or `objectives[3]`."""
        return "".join(self._path).lstrip(".")

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner looks up to 1,024 characters ahead for a simple key and rescans every open
        # flow level each token: "[" * 10_000 would cost seconds before the composer saw a node.
        if self.flow_level > MAX_DEPTH:
            raise _Over(f"nested more than {MAX_DEPTH} levels deep; {_BOUNDS}", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if isinstance(index, yaml.ScalarNode):  # a mapping's value: index is its key's node
            step = f".{clipped(index.value, 40)}"
        elif isinstance(index, int):  # a sequence's item
            step = f"[{index}]"
        else:  # the document's value, or a mapping's key
            step = ""
        self._path.append(step)
        try:
            return self._compose(parent, index)
        except _Over as exc:
            exc.path = self.key_path() if exc.path is None else exc.path  # where it was crossed
            raise
        finally:
            self._path.pop()

    def _compose(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Over(f"more than {MAX_ALIASES} YAML aliases; {_BOUNDS}", mark)
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _Over("a YAML alias inside its own anchor (a value that contains itself)", mark)
            self._add(*size, mark)
            return node
        mark = self.peek_event().start_mark
        if self._depth > MAX_DEPTH:
            raise _Over(f"nested more than {MAX_DEPTH} levels deep; {_BOUNDS}", mark)
        values, chars = self._values, self._chars
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._add(1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0, mark)
        self._sizes[id(node)] = (self._values - values, self._chars - chars)
        return node

    def _add(self, values: int, chars: int, mark: Any) -> None:
        self._values += values
        self._chars += chars
        if self._values > MAX_VALUES or self._chars > MAX_CHARS:
            raise _Over(f"more than {MAX_VALUES:,} values or {MAX_CHARS:,} characters with YAML aliases "
                        f"expanded; {_BOUNDS}", mark)

    def construct_number(self, node: Any) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise _Over(f"a number of {len(node.value):,} characters; a config's integers fit in 64 bits",
                        node.start_mark)
        constructor = yaml.SafeLoader.construct_yaml_int if node.tag.endswith(":int") \
            else yaml.SafeLoader.construct_yaml_float
        return constructor(self, node)


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    _BoundedLoader.add_constructor(_tag, _BoundedLoader.construct_number)


def load_yaml(text: str, where: str, key: str = "") -> Any:
    """The value of the YAML `text`, within the bounds; YamlRefused (YamlInvalid for text that is
    not YAML) naming `where` and, when given, the `key` the text is the value of."""
    at = f"{clipped(key)}: " if key else ""
    if len(text) > MAX_TEXT_CHARS:
        raise YamlRefused(where, f"{at}{len(text):,} characters; {_BOUNDS} (at most {MAX_TEXT_CHARS:,} "
                                 f"characters of YAML)")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters here
        return loader.get_single_data()
    except _Over as exc:
        inner = exc.path or ""
        path = f"{clipped(key)}{'.' if inner and not inner.startswith('[') else ''}{inner}" if key else inner
        raise YamlRefused(where, (f"{clipped(path, 160)}: " if path else "") + exc.detail) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise YamlInvalid(where, f"{at}not valid YAML{place}: "
                                 f"{clipped(str(getattr(exc, 'problem', None) or exc), 300)}") from None
    except (ValueError, OverflowError) as exc:  # a scalar its constructor refuses, e.g. 2024-02-30
        raise YamlInvalid(where, f"{at}not valid YAML: {clipped(str(exc), 300)}") from None
    except RecursionError:  # not reached within MAX_DEPTH; kept as a last guard
        raise YamlRefused(where, f"{at}nested more than {MAX_DEPTH} levels deep; {_BOUNDS}") from None
    finally:
        if loader is not None:
            loader.dispose()


def check_bounds(value: Any, where: str, key: str = "") -> None:
    """YamlRefused naming `where` and the key path if `value` (loaded, or merged from several
    sources) nests deeper than MAX_DEPTH, holds more than MAX_VALUES values or MAX_CHARS
    characters (a value reached twice counts twice), or an integer outside int64. Stops at the
    first bound crossed, so its cost is bounded whatever `value` is."""
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]  # (value, depth, (parent's link, key or index))
    values = chars = 0
    while stack:
        item, depth, link = stack.pop()
        if depth > MAX_DEPTH:
            raise YamlRefused(where, _at(key, link) + f"nested more than {MAX_DEPTH} levels deep; {_BOUNDS}")
        if isinstance(item, dict):
            children: Any = item.items()
            chars += sum(len(k) for k in item if isinstance(k, str))
        elif isinstance(item, (list, tuple)):
            children = enumerate(item)
        else:
            children = ((_SELF, item),)  # the value itself is a scalar
        for step, child in children:
            values += 1
            where_child = link if step is _SELF else (link, step if isinstance(step, int) else str(step))
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1, where_child))
            elif isinstance(child, str):
                chars += len(child)
            elif isinstance(child, int) and not isinstance(child, bool) and not INT64_MIN <= child <= INT64_MAX:
                shown = clipped(str(child), 40) if child.bit_length() < 1000 else f"{child.bit_length():,} bits"
                raise YamlRefused(where, _at(key, where_child) + f"{shown} does not fit in 64 bits (integers "
                                                                 f"are at most {INT64_MAX:,})")
            if values > MAX_VALUES or chars > MAX_CHARS:
                raise YamlRefused(where, _at(key, where_child) + f"more than {MAX_VALUES:,} values or "
                                         f"{MAX_CHARS:,} characters (aliases and overrides included); {_BOUNDS}")


def _at(key: str, link: Any) -> str:
    """`PATH: ` of the value at `link` under `key` (nothing for the value itself)."""
    path = _path(key, link)
    return f"{path}: " if path else ""


def _path(key: str, link: Any) -> str:
    """The key path of a value check_bounds found at `link`, under `key`: `space.a[3]`."""
    steps = []
    while link is not None:
        link, step = link
        steps.append(f"[{step}]" if isinstance(step, int) else f".{clipped(step, 40)}")
    path = clipped(key) + "".join(reversed(steps))
    return clipped(path.lstrip("."), 160)


_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _BoundedLoader.construct_yaml_timestamp)
