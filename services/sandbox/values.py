"""Field values: coercion of incoming values to the stored form, and rendering them back.

Stored forms: ints for integer-like types (enumerations store the list item ID), floats for
``double``, bools for ``boolean``, ``YYYY-MM-DD`` for ``date``, ISO 8601 with the portal's
offset for ``datetime``, strings otherwise; multiple fields store lists; ``PHONE``/``EMAIL``
store ``[{"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}]``. Renderings: ``item`` (``crm.item.*``:
typed, booleans ``Y``/``N``), ``legacy`` (``crm.contact.*``: every scalar a string, boolean user
fields ``1``/``0``) and ``task`` (``tasks.task.*``: strings).
"""

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from services.sandbox.schema import INTEGER_TYPES, FieldSpec
from services.sandbox.timing import MIDNIGHT, PORTAL_TZ

Style = Literal["item", "legacy", "task"]

_TRUE = frozenset({"y", "1", "true"})
_FALSE = frozenset({"n", "0", "false", ""})
_INT = re.compile(r"^-?\d+$")


class FieldValueError(ValueError):
    """A value that does not fit its field; ``code`` is Bitrix24's error code for it."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def coerce(spec: FieldSpec, raw: Any, *, strict_multiple: bool) -> Any:
    """The stored form of ``raw`` for ``spec``; multiple fields get the whole new list."""
    if not spec.multiple:
        return coerce_scalar(spec, raw)
    if isinstance(raw, list):
        values = raw
    elif isinstance(raw, dict):
        values = list(raw.values())
    elif raw is None or raw == "" or raw is False:
        values = []
    elif strict_multiple:
        raise FieldValueError(
            "100",
            f"Expected iterable value for multiple field, but got {_php_type(raw)} instead",
        )
    else:
        values = [raw]
    coerced = [coerce_scalar(spec, value) for value in values]
    return [value for value in coerced if value is not None]


def coerce_scalar(spec: FieldSpec, raw: Any, *, check_items: bool = True) -> Any:
    """One value for ``spec``; ``None`` for an empty value. Raises :class:`FieldValueError`."""
    if spec.type == "boolean":
        return _boolean(spec, raw)
    if raw is None or raw == "" or raw is False:
        return None
    try:
        value = _parser(spec.type)(raw)
    except (TypeError, ValueError) as exc:
        raise _invalid(spec) from exc
    if spec.type == "enumeration" and check_items and spec.item(value) is None:
        raise _invalid(spec)
    return value


def apply_multifield(
    current: list[dict[str, Any]], raw: Any, type_id: str, next_id: Callable[[], int]
) -> list[dict[str, Any]]:
    """Legacy ``PHONE``/``EMAIL`` update rules: no ``ID`` appends; ``ID`` with ``VALUE`` changes;
    ``ID`` without ``VALUE``, with an empty one or with ``DELETE: "Y"`` deletes."""
    entries = list(raw.values()) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        return current
    result = [dict(entry) for entry in current]
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        entry_id = entry.get("ID")
        value = entry.get("VALUE")
        if entry_id in (None, ""):
            if value not in (None, ""):
                result.append(
                    {
                        "ID": next_id(),
                        "VALUE_TYPE": str(entry.get("VALUE_TYPE") or "WORK"),
                        "VALUE": str(value),
                        "TYPE_ID": type_id,
                    }
                )
            continue
        target = next((item for item in result if str(item["ID"]) == str(entry_id)), None)
        if target is None:
            continue
        if str(entry.get("DELETE", "")).upper() == "Y" or value in (None, ""):
            result.remove(target)
        else:
            target["VALUE"] = str(value)
            if entry.get("VALUE_TYPE"):
                target["VALUE_TYPE"] = str(entry["VALUE_TYPE"])
    return result


def render(spec: FieldSpec, value: Any, style: Style) -> Any:
    if spec.type == "crm_multifield":
        return [_render_multifield(entry, style) for entry in value or []]
    if spec.multiple:
        return [_render_scalar(spec, item, style) for item in value or []]
    return _render_scalar(spec, value, style)


def php_number(value: float) -> str:
    """A float as PHP prints it: ``8.0`` -> ``8``, ``7.5`` -> ``7.5``."""
    return str(int(value)) if value.is_integer() else repr(value)


def _render_scalar(spec: FieldSpec, value: Any, style: Style) -> Any:
    if value is None or (style == "item" and spec.type not in ("boolean", "date")):
        return value
    if spec.type == "boolean":
        if style == "legacy" and spec.is_uf:
            return "1" if value else "0"
        return "Y" if value else "N"
    if spec.type == "date":
        return f"{value}{MIDNIGHT}"
    return php_number(value) if isinstance(value, float) else str(value)


def _render_multifield(entry: Mapping[str, Any], style: Style) -> dict[str, Any]:
    return {
        "ID": entry["ID"] if style == "item" else str(entry["ID"]),
        "VALUE_TYPE": entry["VALUE_TYPE"],
        "VALUE": entry["VALUE"],
        "TYPE_ID": entry["TYPE_ID"],
    }


def _boolean(spec: FieldSpec, raw: Any) -> bool:
    if isinstance(raw, bool) or raw is None:
        return bool(raw)
    if isinstance(raw, int | float):
        return raw != 0
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(spec)


def _integer(raw: Any) -> int:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT.match(raw.strip()):
        return int(raw.strip())
    raise ValueError(raw)


def _double(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError(raw)
    return float(raw)


def _string(raw: Any) -> str:
    if isinstance(raw, dict | list):
        raise TypeError(raw)
    if isinstance(raw, float):
        return php_number(raw)
    return str(raw)


def _date(raw: Any) -> str:
    return _parse_datetime(raw).date().isoformat()


def _datetime(raw: Any) -> str:
    return _parse_datetime(raw).isoformat(timespec="seconds")


def _parse_datetime(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise TypeError(raw)
    text = raw.strip()
    for layout in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y"):
        try:
            parsed = datetime.strptime(text, layout)  # noqa: DTZ007 - zone added below
        except ValueError:
            continue
        return parsed.replace(tzinfo=PORTAL_TZ)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=PORTAL_TZ)
    return parsed.astimezone(PORTAL_TZ)


def _invalid(spec: FieldSpec) -> FieldValueError:
    return FieldValueError(
        "CRM_FIELD_ERROR_VALUE_NOT_VALID", f'Invalid value for field "{spec.name}"'
    )


def _php_type(raw: Any) -> str:
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, int):
        return "integer"
    if isinstance(raw, float):
        return "double"
    return "string"


def _parser(field_type: str) -> Callable[[Any], Any]:
    if field_type in INTEGER_TYPES:
        return _integer
    parsers: dict[str, Callable[[Any], Any]] = {
        "double": _double,
        "date": _date,
        "datetime": _datetime,
    }
    return parsers.get(field_type, _string)
