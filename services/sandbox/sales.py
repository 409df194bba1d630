"""Sales on the demo portal: the product catalog, open sales deals in the default funnel
("Sales") with their customers and product rows, and closing sales as a sales manager does (the
deal moved to the won stage, ``ONCRMDEALUPDATE``), for dispatch to survey."""

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.sandbox import schema
from services.sandbox.crm import DEAL, Crm
from services.sandbox.methods import CONTACT
from services.sandbox.people import FIRST_NAMES, LAST_NAMES, MANAGERS
from services.sandbox.portal import SandboxPortal
from services.sandbox.schema import DEAL_STAGES, deal_funnel

SALES_FUNNEL = 0
DAY = 86_400.0

CATALOG = (
    (101, "Laser A", 1_250_000.0),
    (102, "Cryo B", 640_000.0),
    (201, "Serum, 30 ml", 4_500.0),
    (202, "Day cream, 50 ml", 3_200.0),
    (301, "Installation and training", 25_000.0),
)
"""The seeded catalog (product id, name, price). The equipment is 101 (Laser A, SKU
``EQ-LASER-A``) and 102 (Cryo B, SKU ``EQ-CRYO-B``): the portal YAML's ``dispatch.products``
maps these ids to those SKUs; the others are sold alongside and map to nothing."""
EQUIPMENT = (101, 102)
EXTRAS = (201, 202, 301)
CLOSED_BY = "sandbox.close-sales"


class SalesError(ValueError):
    """The portal YAML's ``dispatch`` section has a value the demo portal cannot use; the
    message names the key."""


@dataclass
class ClosedSales:
    """Sales deals moved to the won stage, and which of them had to be opened first."""

    closed: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)


def seed_sales(
    portal: SandboxPortal,
    config: Mapping[str, Any],
    *,
    sku_names: Mapping[str, str],
    count: int = 12,
    seed: int = 42,
) -> list[int]:
    """The catalog (plus any product id of ``dispatch.products`` it lacks, named after its
    SKU's product), the funnels of ``dispatch.sales``, the deal field and automation trigger
    codes of ``dispatch.portal_channel``, and ``count`` open sales deals in the default funnel
    made 1 to 30 days ago, each with a customer who has an e-mail address and product rows."""
    crm = portal.crm
    dispatch = config.get("dispatch") or {}
    if not isinstance(dispatch, Mapping):
        raise SalesError("portal YAML: 'dispatch' must be a mapping")
    install_catalog(crm, _mapped_products(dispatch, sku_names))
    _seed_sales_funnels(crm, dispatch)
    _seed_portal_channel(crm, dispatch)
    rng = random.Random(f"sales-{seed}")  # noqa: S311 - demo data, its own stream: the
    # contacts and answers seeded before stay as they were
    now = portal.clock()
    opened = []
    for _ in range(count):
        created_at = now - rng.uniform(1, 30) * DAY
        stage = rng.choice(("NEW", "PREPARATION"))
        opened.append(open_sale(crm, rng, stage=stage, created_at=created_at, method="seed")["ID"])
    return opened


def install_catalog(crm: Crm, extra: Mapping[int, str] | None = None) -> None:
    """The seeded catalog and ``extra`` products (id → name) not in it yet."""
    for product_id, name, price in CATALOG:
        if product_id not in crm.state.products:
            crm.add_product(product_id, name, price)
    for product_id, name in (extra or {}).items():
        if product_id not in crm.state.products:
            crm.add_product(product_id, name, 100_000.0)


def open_sale(
    crm: Crm,
    rng: random.Random,
    *,
    stage: str = "NEW",
    created_at: float | None = None,
    method: str = CLOSED_BY,
) -> dict[str, Any]:
    """A new sales deal in the default funnel: a customer with an e-mail address, a sales
    manager, product rows (mostly one piece of equipment, often with consumables or
    installation), the amount their total."""
    if not crm.state.products:
        install_catalog(crm)
    contact = _customer(crm, rng)
    manager = rng.choice(MANAGERS)[0]
    rows = _product_rows(crm, rng)
    first = crm.state.products[rows[0]["productId"]].name
    deal = crm.add(
        DEAL,
        {
            "TITLE": f"Sale: {first}, {contact['NAME']} {contact['LAST_NAME']}",
            "CATEGORY_ID": SALES_FUNNEL,
            "STAGE_ID": stage,
            "CONTACT_ID": contact["ID"],
            "ASSIGNED_BY_ID": manager,
        },
        method=method,
        created_at=created_at,
    )
    crm.set_product_rows("D", deal["ID"], rows, method=method)
    return deal


def close_sales(portal: SandboxPortal, count: int, seed: int | None = None) -> ClosedSales:
    """Move ``count`` open sales deals of the default funnel that have a customer (the oldest
    first) to its success stage, as a sales manager does: each move fires ``ONCRMDEALUPDATE``
    and enters the stage history. Deals are opened first (customer, product rows) when there
    are not enough."""
    crm = portal.crm
    rng = random.Random(seed)  # noqa: S311 - demo data, not crypto
    won = _won_stage(crm)
    deals = crm.records(DEAL)
    waiting = sorted(
        deal_id
        for deal_id, deal in deals.items()
        if deal.get("CATEGORY_ID") == SALES_FUNNEL
        and deal.get("STAGE_SEMANTIC_ID") == "P"
        and deal.get("CONTACT_ID")
    )
    result = ClosedSales(closed=waiting[:count])
    while len(result.closed) < count:
        deal_id = open_sale(crm, rng)["ID"]
        result.created.append(deal_id)
        result.closed.append(deal_id)
    for deal_id in result.closed:
        crm.update(DEAL, deal_id, {"STAGE_ID": won}, method=CLOSED_BY)
    return result


def _won_stage(crm: Crm) -> str:
    funnel = crm.state.entity_types[DEAL].category(SALES_FUNNEL)
    stages = [s for s in (funnel.stages if funnel else []) if s.semantics == "S"]
    if not stages:
        raise SalesError("the default deal funnel has no success stage")
    return min(stages, key=lambda stage: stage.sort).status_id


def _customer(crm: Crm, rng: random.Random) -> dict[str, Any]:
    """A contact with an e-mail address (a new one when the portal has none)."""
    reachable = [c for c in crm.records(CONTACT).values() if c.get("EMAIL")]
    if reachable:
        return rng.choice(reachable)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first}.{last}{rng.randint(1, 999)}@example.org".lower()
    return crm.add(
        CONTACT,
        {
            "NAME": first,
            "LAST_NAME": last,
            "ASSIGNED_BY_ID": rng.choice(MANAGERS)[0],
            "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
        },
        method=CLOSED_BY,
    )


def _product_rows(crm: Crm, rng: random.Random) -> list[dict[str, Any]]:
    catalog = crm.state.products
    chosen: list[tuple[int, int]] = []
    equipment = [product_id for product_id in EQUIPMENT if product_id in catalog]
    extras = [product_id for product_id in EXTRAS if product_id in catalog]
    if equipment and rng.random() < 0.85:
        chosen.append((rng.choice(equipment), 1))
    for product_id in rng.sample(extras, k=rng.randint(0, min(2, len(extras)))):
        chosen.append((product_id, 1 if product_id == 301 else rng.randint(1, 6)))
    if not chosen:
        chosen.append((rng.choice(extras or list(catalog)), 1))
    discount = rng.choice((0, 0, 0, 5, 10))
    return [
        {
            "productId": product_id,
            "price": round(catalog[product_id].price * (100 - discount) / 100, 2),
            "quantity": quantity,
            "discountTypeId": 2,
            "discountRate": discount,
        }
        for product_id, quantity in chosen
    ]


def _mapped_products(dispatch: Mapping[str, Any], sku_names: Mapping[str, str]) -> dict[int, str]:
    """``dispatch.products`` (portal product id → SKU) as id → the product's name."""
    products = dispatch.get("products") or {}
    if not isinstance(products, Mapping):
        raise SalesError("portal YAML: 'dispatch.products' must map product ids to SKUs")
    mapped = {}
    for raw_id, sku in products.items():
        try:
            product_id = int(raw_id)
        except (TypeError, ValueError):
            raise SalesError(
                f"portal YAML: 'dispatch.products' key {raw_id!r}: expected a product id (a number)"
            ) from None
        mapped[product_id] = sku_names.get(str(sku), str(sku))
    return mapped


def _seed_sales_funnels(crm: Crm, dispatch: Mapping[str, Any]) -> None:
    etype = crm.state.entity_types[DEAL]
    for index, sale in enumerate(dispatch.get("sales") or []):
        funnel = sale.get("funnel") if isinstance(sale, Mapping) else None
        if not isinstance(funnel, int) or funnel < 0:
            raise SalesError(f"portal YAML: 'dispatch.sales.{index}.funnel': expected a funnel id")
        if etype.category(funnel) is None:
            etype.categories.append(deal_funnel(funnel, f"Sales {funnel}", DEAL_STAGES))
            crm.revision += 1


def _seed_portal_channel(crm: Crm, dispatch: Mapping[str, Any]) -> None:
    """The deal field the links go into, and the automation triggers the portal has."""
    channel = dispatch.get("portal_channel") or {}
    if not isinstance(channel, Mapping):
        raise SalesError("portal YAML: 'dispatch.portal_channel' must be a mapping")
    link_field = channel.get("link_field")
    etype = crm.state.entity_types[DEAL]
    if link_field and str(link_field) not in etype.fields:
        crm.add_user_field(DEAL, schema.field(str(link_field), "string", "NPS survey link"))
    for key in ("trigger", "reminder_trigger"):
        code = channel.get(key)
        if code and str(code) not in crm.state.trigger_codes:
            crm.state.trigger_codes.append(str(code))
