"""Batch commands as PHP query strings: `method?param=value&arr[0]=x&fields[TITLE]=y`.

The portal parses each command with PHP's `parse_str`, so nested dicts and lists become bracket
keys and every value arrives as a string (docs/bitrix24-client.md, Bitrix24 facts: batch). What
cannot survive that trip is mapped to the nearest value PHP can read:

- `None` → an empty string (the way to clear a field in a command);
- `True`/`False` → `1`/`0`, as PHP's `http_build_query` does (pass `"Y"`/`"N"` where a legacy
  method wants those);
- an empty list or dict → an empty string under its own key, never nothing at all: dropping the
  key would silently turn `filter[@id]=[]` ("none of these ids") into "no filter" (every item);
- dates and datetimes → ISO 8601.

Keys and values are percent-encoded; the brackets that give the structure are left readable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any
from urllib.parse import quote


def encode_query(params: Mapping[str, Any]) -> str:
    """Params as a PHP query string (`a=1&fields[TITLE]=x&filter[%3Eid]=5`)."""
    return "&".join(
        _encode_key(path) + "=" + quote(value, safe="")
        for key, item in params.items()
        for path, value in _pairs((str(key),), item)
    )


def command_string(method: str, params: Mapping[str, Any]) -> str:
    """One `cmd` entry of a `batch` call."""
    query = encode_query(params)
    return f"{method}?{query}" if query else method


def _pairs(path: tuple[str, ...], value: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, Mapping):
        children: list[tuple[str, Any]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        children = [(str(i), v) for i, v in enumerate(value)]
    else:
        yield path, _scalar(path, value)
        return
    if not children:
        yield path, ""
        return
    for child, item in children:
        yield from _pairs((*path, child), item)


def _scalar(path: tuple[str, ...], value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    name = path[0] + "".join(f"[{part}]" for part in path[1:])
    raise TypeError(f"{name}: cannot send a {type(value).__name__} in a batch command")


def _encode_key(path: tuple[str, ...]) -> str:
    head, *rest = path
    return quote(head, safe="") + "".join(f"[{quote(part, safe='')}]" for part in rest)
