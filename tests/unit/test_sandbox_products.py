"""Product rows of the sandbox portal: owner codes, the row built from a caller's values, the
prices worked out from them, and the list filter and order."""

from typing import Any

import pytest

from services.sandbox.errors import RestError
from services.sandbox.products import build_row, owner_entity_type, row_matches, sort_rows

CATALOG = {101: {"name": "Laser A", "measure_code": 796}, 7: {"name": "Gel", "measure_code": 112}}


def row(raw: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return build_row(raw, index, row_id=1, owner_type="D", owner_id=9, catalog=CATALOG.get)


@pytest.mark.parametrize(
    ("code", "entity_type_id"),
    [
        ("D", 2),
        ("d", 2),
        ("L", 1),
        ("SI", 31),
        ("T80", 128),
        ("T40e", 1038),
        ("T3", None),
        ("C", None),
        ("", None),
        ("Tzz", None),
    ],
)
def test_owner_codes_name_the_entity_type(code: str, entity_type_id: int | None) -> None:
    assert owner_entity_type(code) == entity_type_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"productId": 101, "price": 100},
            {"productName": "Laser A", "priceNetto": 100, "discountSum": 0, "quantity": 1},
        ),
        (
            {"productName": "Free text", "price": 90, "discountTypeId": 1, "discountSum": 10},
            {"productId": 0, "priceNetto": 100, "discountRate": 10, "priceBrutto": 100},
        ),
        (
            {"productId": 101, "price": 110, "taxRate": 10, "taxIncluded": "Y"},
            {"priceExclusive": 100, "priceBrutto": 110, "taxName": "", "taxRate": 10},
        ),
        (
            {"productId": 7, "productName": "Gel, 1 l", "price": "12.5", "quantity": "4"},
            {"productName": "Gel, 1 l", "price": 12.5, "quantity": 4, "measureName": "l"},
        ),
        ({"productId": "101", "sort": 30.0}, {"productId": 101, "sort": 30, "price": 0}),
    ],
)
def test_rows_take_the_catalog_and_work_out_prices(
    raw: dict[str, Any], expected: dict[str, Any]
) -> None:
    built = row(raw)
    assert {key: built[key] for key in expected} == expected
    assert (built["id"], built["ownerType"], built["ownerId"], built["type"]) == (1, "D", 9, 4)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"productId": 5}, "productRows[2].productId: product 5 was not found in the catalog"),
        ({"price": 3}, "productRows[2]: give productId (a product of the catalog) or productName"),
        ({"productId": 101, "quantity": "many"}, "productRows[2].quantity: expected a number"),
        ({"productId": 101, "price": True}, "productRows[2].price: expected a number"),
        ({"productId": 101, "sort": 1.5}, "productRows[2].sort: expected an integer"),
        ({"productId": 101, "discountTypeId": 3}, "productRows[2].discountTypeId: expected 1"),
        ({"productId": 101, "taxIncluded": "maybe"}, 'productRows[2].taxIncluded: expected "Y"'),
        ("101", "productRows[2]: expected an object (a product row)"),
    ],
)
def test_a_row_that_does_not_fit_is_named_in_the_error(raw: Any, message: str) -> None:
    with pytest.raises(RestError) as caught:
        row(raw, index=2)
    assert (caught.value.status, caught.value.code) == (400, "INVALID_ARG_VALUE")
    assert caught.value.description.startswith(message)


ROWS = [
    {"id": 3, "productId": 101, "sort": 20},
    {"id": 1, "productId": 7, "sort": 10},
    {"id": 2, "productId": 101, "sort": 10},
]


@pytest.mark.parametrize(
    ("filter_", "ids"),
    [
        ({}, [3, 1, 2]),
        ({"productId": 101}, [3, 2]),
        ({"!=productId": 101}, [1]),
        ({">id": 1, "<=id": 2}, [2]),
        ({"@id": [1, 3]}, [3, 1]),
        ({"productId": [7], "price": 5, "=ownerId": 4}, [3, 1, 2]),
    ],
)
def test_the_list_filter_reads_id_and_product_only(filter_: dict[str, Any], ids: list[int]) -> None:
    assert [r["id"] for r in ROWS if row_matches(r, filter_)] == ids


@pytest.mark.parametrize(
    ("order", "ids"),
    [
        (None, [1, 2, 3]),
        ({"sort": "desc"}, [3, 1, 2]),
        ({"id": "DESC"}, [3, 2, 1]),
        ({"price": "asc"}, [1, 2, 3]),
    ],
)
def test_rows_are_ordered_by_sort_or_id(order: Any, ids: list[int]) -> None:
    assert [r["id"] for r in sort_rows(ROWS, order)] == ids
