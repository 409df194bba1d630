"""Product rows of CRM objects, as ``crm.item.productrow.*`` reads and writes them: the owner's
short type code, the row built from what a caller sends (the catalog filling in name and unit),
the prices worked out the way Bitrix24 does, and the list filter. Pure: no I/O."""

from collections.abc import Callable, Mapping
from typing import Any

from services.sandbox.errors import RestError

OWNER_CODES = {"L": 1, "D": 2, "Q": 7, "SI": 31}
"""Short codes of the CRM object types that have product rows; a smart process is ``T`` and
its entityTypeId in hexadecimal (``T80`` = 128)."""

FIRST_SMART_PROCESS = 128
MEASURES = {796: "pcs", 6: "m", 112: "l", 163: "g", 166: "kg"}
PRODUCT_ROW_TYPE = 4  # a simple product of the catalog
DISCOUNT_ABSOLUTE = 1
DISCOUNT_PERCENT = 2
_DIGITS = 8  # Bitrix24 prints computed prices with 8 decimals


def owner_entity_type(code: Any) -> int | None:
    """The entityTypeId of an ``ownerType`` short code, None for an unknown code."""
    text = str(code or "").strip()
    if text.upper() in OWNER_CODES:
        return OWNER_CODES[text.upper()]
    if len(text) > 1 and text[0] in "Tt":
        try:
            entity_type_id = int(text[1:], 16)
        except ValueError:
            return None
        return entity_type_id if entity_type_id >= FIRST_SMART_PROCESS else None
    return None


Catalog = Callable[[int], Mapping[str, Any] | None]
"""A product of the catalog by id (``name``, ``measure_code``), None when there is none."""


def build_row(
    raw: Any, index: int, *, row_id: int, owner_type: str, owner_id: int, catalog: Catalog
) -> dict[str, Any]:
    """One product row from one element of ``productRows`` (``index`` names it in errors).
    Raises :class:`RestError` ``INVALID_ARG_VALUE`` for a value that does not fit."""
    if not isinstance(raw, Mapping):
        raise RestError(
            400, "INVALID_ARG_VALUE", f"productRows[{index}]: expected an object (a product row)"
        )
    product_id = _int(raw, "productId", index, default=0)
    product = catalog(product_id) if product_id else None
    if product_id and product is None:
        raise RestError(
            400,
            "INVALID_ARG_VALUE",
            f"productRows[{index}].productId: product {product_id} was not found in the catalog",
        )
    name = raw.get("productName")
    if name in (None, ""):
        if product is None:
            raise RestError(
                400,
                "INVALID_ARG_VALUE",
                f"productRows[{index}]: give productId (a product of the catalog) or productName",
            )
        name = product["name"]
    price = _number(raw, "price", index, default=0.0)
    quantity = _number(raw, "quantity", index, default=1.0)
    discount_type = _int(raw, "discountTypeId", index, default=DISCOUNT_PERCENT)
    if discount_type not in (DISCOUNT_ABSOLUTE, DISCOUNT_PERCENT):
        raise _invalid(index, "discountTypeId", "1 (absolute) or 2 (percent)")
    tax_rate = _number(raw, "taxRate", index, default=None)
    tax_included = str(raw.get("taxIncluded") or "N").upper()
    if tax_included not in ("Y", "N"):
        raise _invalid(index, "taxIncluded", '"Y" or "N"')
    default_measure = int(product["measure_code"]) if product is not None else 796
    measure = _int(raw, "measureCode", index, default=default_measure)
    prices = _prices(
        price,
        tax_rate=tax_rate,
        discount_type=discount_type,
        discount_rate=_number(raw, "discountRate", index, default=0.0),
        discount_sum=_number(raw, "discountSum", index, default=0.0),
    )
    return {
        "id": row_id,
        "ownerId": owner_id,
        "ownerType": owner_type,
        "productId": product_id,
        "productName": str(name),
        **prices,
        "quantity": quantity,
        "taxRate": tax_rate,
        "taxIncluded": tax_included,
        "taxName": str(raw.get("taxName") or ("No VAT" if tax_rate is None else "")),
        "customized": "Y",
        "measureCode": measure,
        "measureName": MEASURES.get(measure, ""),
        "sort": _int(raw, "sort", index, default=10 * (index + 1)),
        "xmlId": "",
        "type": PRODUCT_ROW_TYPE,
        "storeId": None,
    }


def _prices(
    price: float,
    *,
    tax_rate: float | None,
    discount_type: int,
    discount_rate: float,
    discount_sum: float,
) -> dict[str, Any]:
    """``price`` is per unit after discount, tax included; the rest follows from it:
    ``priceExclusive`` after discount without tax, ``priceNetto`` before discount without tax,
    ``priceBrutto`` before discount with tax."""
    tax = (tax_rate or 0.0) / 100
    exclusive = price / (1 + tax)
    if discount_type == DISCOUNT_PERCENT:
        netto = exclusive / (1 - discount_rate / 100) if discount_rate < 100 else exclusive
        discount_sum = netto - exclusive
    else:
        netto = exclusive + discount_sum
        discount_rate = discount_sum / netto * 100 if netto else 0.0
    return {
        "price": price,
        "priceAccount": price,
        "priceExclusive": round(exclusive, _DIGITS),
        "priceNetto": round(netto, _DIGITS),
        "priceBrutto": round(netto * (1 + tax), _DIGITS),
        "discountTypeId": discount_type,
        "discountRate": round(discount_rate, _DIGITS),
        "discountSum": round(discount_sum, _DIGITS),
    }


_ROW_FILTER_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda left, right: left == right,
    "!=": lambda left, right: left != right,
    ">=": lambda left, right: left >= right,
    "<=": lambda left, right: left <= right,
    ">": lambda left, right: left > right,
    "<": lambda left, right: left < right,
}


def owner_filter(raw: Any) -> tuple[str, int]:
    """``=ownerType`` and ``=ownerId`` of a ``crm.item.productrow.list`` filter, both required."""
    filter_ = raw if isinstance(raw, Mapping) else {}
    owner_type = filter_.get("=ownerType")
    owner_id = filter_.get("=ownerId")
    missing = [
        key for key, value in (("=ownerType", owner_type), ("=ownerId", owner_id)) if not value
    ]
    if missing:
        raise RestError(
            400, "REQUIRED_ARG_MISSING", f"Required filter keys missing: {', '.join(missing)}"
        )
    parsed = _as_int(owner_id)
    if parsed is None:
        raise RestError(
            400, "INVALID_ARG_VALUE", "filter =ownerId: expected the CRM object's integer id"
        )
    return str(owner_type), parsed


def row_matches(row: Mapping[str, Any], raw: Any) -> bool:
    """The ``id``/``productId`` conditions of the filter (prefixes ``=``, ``!=``, ``>``, ``>=``,
    ``<``, ``<=``; an array only in ``@id``). Conditions on other fields are ignored, as
    Bitrix24 ignores them."""
    if not isinstance(raw, Mapping):
        return True
    for key, value in raw.items():
        text = str(key)
        if text == "@id":
            wanted = value if isinstance(value, list) else [value]
            if row["id"] not in {_as_int(item) for item in wanted}:
                return False
            continue
        op = next((op for op in ("!=", ">=", "<=", "=", ">", "<") if text.startswith(op)), "=")
        name = text[len(op) :] if text.startswith(op) else text
        if name not in ("id", "productId") or isinstance(value, list | Mapping):
            continue
        wanted_value = _as_int(value)
        if wanted_value is None or not _ROW_FILTER_OPS[op](int(row[name]), wanted_value):
            return False
    return True


def sort_rows(rows: list[dict[str, Any]], raw_order: Any) -> list[dict[str, Any]]:
    """By ``id`` and ``sort`` (other fields ignored); by ``sort`` ascending without an order."""
    order = [
        (str(key), str(direction).upper() == "DESC")
        for key, direction in (raw_order.items() if isinstance(raw_order, Mapping) else [])
        if str(key) in ("id", "sort")
    ] or [("sort", False)]
    ordered = sorted(rows, key=lambda row: row["id"])
    for name, descending in reversed(order):
        ordered.sort(key=lambda row: row[name], reverse=descending)
    return ordered


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _int(raw: Mapping[str, Any], name: str, index: int, *, default: int) -> int:
    value = raw.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    parsed = _as_int(value)
    if parsed is None or isinstance(value, float | bool):
        raise _invalid(index, name, "an integer")
    return parsed


def _number(raw: Mapping[str, Any], name: str, index: int, *, default: Any) -> Any:
    value = raw.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, bool):
        raise _invalid(index, name, "a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _invalid(index, name, "a number") from None


def _invalid(index: int, name: str, expected: str) -> RestError:
    return RestError(400, "INVALID_ARG_VALUE", f"productRows[{index}].{name}: expected {expected}")
