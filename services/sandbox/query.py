"""List-method queries: filters with Bitrix24's key prefixes, ``order``, ``select`` and pages
of 50 (``start=-1`` skips the count: ``total`` 0 and no ``next``)."""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.sandbox.schema import FieldSpec
from services.sandbox.values import FieldValueError, coerce_scalar

PAGE_SIZE = 50

Resolver = Callable[[str], FieldSpec | None]

_PREFIXES = (
    ("!@", "not_in"),
    ("!%", "not_like"),
    ("!=", "ne"),
    (">=", "ge"),
    ("<=", "le"),
    ("@", "in"),
    ("%", "like"),
    ("=", "eq"),
    (">", "gt"),
    ("<", "lt"),
    ("!", "ne"),
)
_EMPTY = object()  # filter value "" / null: the field is empty
_NOTHING = object()  # boolean filtered with Y/N: Bitrix24 wants 1/0, so nothing matches


class QueryError(ValueError):
    """A filter, order or select Bitrix24 would refuse with ``INVALID_ARG_VALUE``."""


@dataclass(frozen=True)
class Condition:
    spec: FieldSpec
    op: str
    value: Any


def parse_filter(raw: Any, resolve: Resolver, *, strict: bool = True) -> list[Condition]:
    """Conditions from a ``filter`` object; unknown fields raise unless ``strict`` is off."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, Mapping):
        raise QueryError("Filter must be an object")
    conditions = []
    for key, value in raw.items():
        op, name = _split(str(key))
        spec = resolve(name)
        if spec is None:
            if strict:
                raise QueryError(f"Invalid filter: field '{name}' is not allowed in filter")
            continue
        if isinstance(value, list | Mapping) and op in ("eq", "ne"):
            op = "in" if op == "eq" else "not_in"
        if op in ("in", "not_in"):
            items = _items(value)
            conditions.append(Condition(spec, op, tuple(_value(spec, item) for item in items)))
        elif op in ("like", "not_like"):
            conditions.append(Condition(spec, op, str(value).lower()))
        else:
            conditions.append(Condition(spec, op, _value(spec, value)))
    return conditions


def matches(record: Mapping[str, Any], conditions: Iterable[Condition]) -> bool:
    return all(
        _test(_candidates(condition.spec, record.get(condition.spec.name)), condition)
        for condition in conditions
    )


def parse_order(raw: Any, resolve: Resolver) -> list[tuple[str, bool]]:
    """``[(UPPER field name, descending)]`` from an ``order`` object."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, Mapping):
        raise QueryError("Order must be an object")
    order = []
    for key, direction in raw.items():
        spec = resolve(str(key))
        if spec is None:
            raise QueryError(f"Invalid order: field '{key}' is not allowed in order")
        order.append((spec.name, str(direction).upper() == "DESC"))
    return order


def sort_records(
    records: list[dict[str, Any]], order: list[tuple[str, bool]]
) -> list[dict[str, Any]]:
    ordered = list(records)
    for name, descending in reversed(order):
        ordered.sort(key=lambda record: _sort_key(record.get(name)), reverse=descending)
    return ordered


def parse_start(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def page(records: list[Any], start: int) -> tuple[list[Any], int, int | None]:
    """``(rows, total, next)``; ``start`` below zero skips the count."""
    if start < 0:
        return records[:PAGE_SIZE], 0, None
    end = start + PAGE_SIZE
    return records[start:end], len(records), end if end < len(records) else None


def select_fields(
    raw: Any,
    fields: Mapping[str, FieldSpec],
    resolve: Resolver,
    star: Callable[[FieldSpec], bool],
) -> list[str]:
    """UPPER names chosen by ``select``: ``*`` (fields where ``star`` holds), ``UF_*`` (user
    fields) or names; ``ID`` always; storage order. No select means ``*``."""
    names = _names(raw) or ["*"]
    chosen = {"ID"}
    for name in names:
        if name == "*":
            chosen.update(key for key, spec in fields.items() if star(spec))
        elif name.upper() == "UF_*" or name in ("uf*", "ufCrm*"):
            chosen.update(key for key, spec in fields.items() if spec.is_uf)
        elif (spec := resolve(name)) is not None:
            chosen.add(spec.name)
    return [name for name in fields if name in chosen]


def _names(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw] if raw else []
    if isinstance(raw, Mapping):
        return [str(item) for item in raw.values()]
    if isinstance(raw, list):
        return [str(item) for item in raw]
    return []


def _items(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.values())
    return value if isinstance(value, list) else [value]


def _split(key: str) -> tuple[str, str]:
    for prefix, op in _PREFIXES:
        if key.startswith(prefix):
            return op, key[len(prefix) :]
    return "eq", key


def _value(spec: FieldSpec, raw: Any) -> Any:
    if raw is None or raw == "" or (raw is False and spec.type != "boolean"):
        return _EMPTY
    if spec.type == "boolean" and str(raw).upper() in ("Y", "N"):
        return _NOTHING
    if spec.type == "crm_multifield":
        return str(raw)
    try:
        return coerce_scalar(spec, raw, check_items=False)
    except FieldValueError as exc:
        raise QueryError(f"Invalid filter value for field '{spec.name}'") from exc


def _candidates(spec: FieldSpec, stored: Any) -> list[Any]:
    if stored is None:
        return []
    if spec.type == "crm_multifield":
        return [entry["VALUE"] for entry in stored]
    return list(stored) if isinstance(stored, list) else [stored]


def _test(values: list[Any], condition: Condition) -> bool:  # noqa: PLR0911 - one per operator
    op, wanted = condition.op, condition.value
    if wanted is _EMPTY:
        return not values if op in ("eq", "like") else bool(values)
    if op == "in":
        return any(value in wanted for value in values)
    if op == "not_in":
        return not any(value in wanted for value in values)
    if op == "eq":
        return wanted in values
    if op == "ne":
        return wanted not in values
    if op == "like":
        return any(wanted in str(value).lower() for value in values)
    if op == "not_like":
        return not any(wanted in str(value).lower() for value in values)
    if wanted is _NOTHING:
        return False
    return any(_COMPARE[op](value, wanted) for value in values)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda left, right: left > right,
    "ge": lambda left, right: left >= right,
    "lt": lambda left, right: left < right,
    "le": lambda left, right: left <= right,
}


def _sort_key(value: Any) -> tuple[bool, Any]:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("VALUE")
    return value is not None, value
