"""Strict YAML reading that keeps line numbers, for files users write by hand.

    root = load_yaml(Path("ddf.yml"))
    names = root.mapping(ddf_path)["class_names"]     # a Node, with .line for messages

Scalars stay text (`07` stays "07"; numbers are parsed by whoever knows the field's type), so no
value changes meaning behind the user's back. Anchors, aliases, tags, duplicate keys, non-string
keys and multiple documents are refused: each is a common source of silent mistakes in
hand-written configuration, and nothing in yogo's files needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yogo.errors import UserError

NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})

Value = str | None | list["Node"] | dict[str, "Node"]


@dataclass(frozen=True)
class Node:
    """One YAML value and where it was written (1-based lines; `key_line` for mapping values)."""

    value: Value
    line: int
    key_line: int

    @property
    def kind(self) -> str:
        """What the value is, for messages: "a list", "an empty list", "text", ..."""
        if isinstance(self.value, dict):
            return "a mapping" if self.value else "an empty mapping"
        if isinstance(self.value, list):
            return "a list" if self.value else "an empty list"
        return "an empty value" if self.value is None else "text"

    def mapping(self, path: Path, what: str) -> dict[str, Node]:
        if not isinstance(self.value, dict):
            raise UserError(
                f"{what} must be a mapping (key: value lines), got {self.kind}",
                path=path,
                line=self.line,
            )
        return self.value

    def text(self, path: Path, what: str) -> str:
        if not isinstance(self.value, str) or self.value == "":
            raise UserError(
                f"{what} must be a non-empty text value, got {self.kind}", path=path, line=self.line
            )
        return self.value


def load_yaml(path: Path) -> Node:
    """Parse `path` into a Node tree; any problem is a UserError naming the file and line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError("file does not exist", path=path, fix="check the path") from None
    except IsADirectoryError:
        raise UserError("is a folder, expected a YAML file", path=path) from None
    except UnicodeDecodeError as e:
        if path.read_bytes().startswith(b"PK\x03\x04"):  # torch.save's zip format
            raise UserError(
                "is a checkpoint (or another zip archive), not a YAML file",
                path=path,
                fix="give the dataset definition (.yml) here; a checkpoint goes elsewhere "
                "(see the command's --help)",
            ) from None
        raise UserError(f"is not UTF-8 text ({e.reason})", path=path) from None
    except OSError as e:
        raise UserError(f"cannot be read: {e.strerror}", path=path) from None

    try:
        events = list(YAML(typ="safe", pure=True).parse(text))
        return _Builder(path, iter(events)).document()
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "invalid YAML"
        raise UserError(f"invalid YAML: {problem}", path=path, line=line) from None
    except YAMLError as e:
        raise UserError(f"invalid YAML: {e}", path=path) from None


class _Builder:
    """Turns ruamel parse events into Nodes, refusing the constructs listed in the module doc."""

    def __init__(self, path: Path, events: Iterator[Any]) -> None:
        self.path = path
        self.events = events

    def _next(self) -> Any:
        return next(self.events)

    def document(self) -> Node:
        self._next()  # StreamStart
        start = self._next()
        if type(start).__name__ == "StreamEndEvent":
            raise UserError("file is empty", path=self.path, fix="see docs/dataset-definition.md")
        root = self.node(self._next(), key_line=1)
        self._next()  # DocumentEnd
        extra = self._next()
        if type(extra).__name__ != "StreamEndEvent":
            raise UserError(
                "holds more than one YAML document ('---' separator)",
                path=self.path,
                line=extra.start_mark.line + 1,
                fix="keep one document per file",
            )
        return root

    def node(self, event: Any, key_line: int) -> Node:
        kind = type(event).__name__
        line = event.start_mark.line + 1
        if kind == "AliasEvent":
            raise UserError(
                f"YAML alias '*{event.anchor}' is not allowed",
                path=self.path,
                line=line,
                fix="write the value out in full",
            )
        if getattr(event, "anchor", None) is not None:
            raise UserError(
                f"YAML anchor '&{event.anchor}' is not allowed",
                path=self.path,
                line=line,
                fix="remove the anchor and write values out in full",
            )
        if getattr(event, "tag", None) is not None:
            raise UserError(
                f"YAML tag '{event.tag}' is not allowed",
                path=self.path,
                line=line,
                fix="remove the tag; quote the value if it must stay text",
            )
        if kind == "ScalarEvent":
            plain = event.style is None
            value = None if plain and event.value in NULL_WORDS else event.value
            return Node(value, line, key_line)
        if kind == "SequenceStartEvent":
            items: list[Node] = []
            while type(item := self._next()).__name__ != "SequenceEndEvent":
                items.append(self.node(item, item.start_mark.line + 1))
            return Node(items, line, key_line)
        if kind == "MappingStartEvent":
            return Node(self.mapping_items(), line, key_line)
        raise UserError(f"unexpected YAML content ({kind})", path=self.path, line=line)

    def mapping_items(self) -> dict[str, Node]:
        items: dict[str, Node] = {}
        while type(key := self._next()).__name__ != "MappingEndEvent":
            key_line = key.start_mark.line + 1
            if type(key).__name__ != "ScalarEvent" or key.tag is not None or key.anchor:
                raise UserError("mapping keys must be plain text", path=self.path, line=key_line)
            if key.value in items:
                raise UserError(
                    f"duplicate key '{key.value}' (first on line {items[key.value].key_line})",
                    path=self.path,
                    line=key_line,
                    fix="keep one of them",
                )
            items[key.value] = self.node(self._next(), key_line)
        return items
