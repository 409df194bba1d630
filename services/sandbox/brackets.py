"""PHP bracket keys (``fields[TITLE]=x``, ``filter[@ID][0]=1``) to nested data and back.

Bitrix24 parses form bodies, query strings and batch commands the way PHP does: ``a[b][c]=v``
builds nested arrays, ``a[]=v`` appends, and an array whose keys are exactly ``0..n-1`` is a
list. Every value stays a string.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse_query(query: str) -> dict[str, Any]:
    """Parse an urlencoded query string or form body into nested dicts and lists."""
    return parse_pairs(parse_qsl(query, keep_blank_values=True))


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nesting from flat ``(key, value)`` pairs with PHP bracket keys."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            root[key] = value
            continue
        path = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for part in path[:-1]:
            name = part or _next_index(node)
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
        node[path[-1] or _next_index(node)] = value
    return {key: _listify(value) for key, value in root.items()}


def encode(params: Mapping[str, Any]) -> str:
    """Encode nested data as PHP's ``http_build_query`` does (None is left out)."""
    return urlencode(list(flatten(params)))


def flatten(params: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    """Flat ``(bracket key, string value)`` pairs for nested data, in order."""
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name)
        elif isinstance(value, list | tuple):
            yield from flatten({str(i): item for i, item in enumerate(value)}, name)
        elif value is not None:
            yield name, _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _next_index(node: dict[str, Any]) -> str:
    indexes = [int(key) for key in node if key.isascii() and key.isdigit()]
    return str(max(indexes) + 1) if indexes else "0"


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {key: _listify(item) for key, item in value.items()}
    if converted and list(converted) == [str(index) for index in range(len(converted))]:
        return list(converted.values())
    return converted
