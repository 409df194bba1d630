"""``batch`` command parsing, ``$result[...]`` references and PHP-shaped result sections."""

import re
from collections.abc import Mapping
from typing import Any

from services.sandbox.brackets import parse_query

MAX_COMMANDS = 50

_REFERENCE = re.compile(r"\$(result|next|total|time|error)((?:\[[^\[\]]*\])+)")
_PART = re.compile(r"\[([^\[\]]*)\]")


def method_name(name: str) -> str:
    """Method names are case-insensitive and may end in ``.json``."""
    return name.strip().lower().removesuffix(".json")


def commands(raw: Any) -> list[tuple[str, str]]:
    """``(key, "method?query")`` in the given order; ``cmd`` may be an object or a list."""
    if isinstance(raw, Mapping):
        return [(str(key), str(command)) for key, command in raw.items()]
    if isinstance(raw, list):
        return [(str(index), str(command)) for index, command in enumerate(raw)]
    return []


def parse_command(command: str) -> tuple[str, dict[str, Any]]:
    """A batch command's method and parameters (PHP bracket keys, all values strings)."""
    method, _, query = command.partition("?")
    return method_name(method), parse_query(query)


def substitute(value: Any, sources: Mapping[str, Mapping[str, Any]]) -> Any:
    """Replace ``$result[cmd][path]`` (also ``$next``, ``$total``, ``$time``, ``$error``) in
    every string value. A whole-value reference takes the referenced value as it is; inside a
    longer string only scalars are substituted. A path stops at its last existing level; a
    reference to a command with no result is left as written."""
    if isinstance(value, Mapping):
        return {key: substitute(item, sources) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, sources) for item in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        return _lookup(whole, sources)
    return _REFERENCE.sub(lambda match: _inline(_lookup(match, sources), match.group(0)), value)


def php_array(section: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
    """A section as PHP's ``json_encode`` writes an array: ``[]`` when empty, a list when the
    keys are exactly ``0..n-1``, an object otherwise."""
    if list(section) == [str(index) for index in range(len(section))]:
        return list(section.values())
    return dict(section)


def _lookup(match: re.Match[str], sources: Mapping[str, Mapping[str, Any]]) -> Any:
    command, *path = _PART.findall(match.group(2))
    section = sources.get(match.group(1), {})
    if command not in section:
        return match.group(0)
    node = section[command]
    for key in path:
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isascii() and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            break
    return node


def _inline(value: Any, original: str) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    if value is None:
        return ""
    if isinstance(value, int | float | str):
        return str(value)
    return original
