"""Scored answers as scoring publishes them, for the router's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import Category, Kind, NpsScored, PortalRef, ScoredAnswer

SUBMITTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
EQUIPMENT = 12  # Laser A, with contact fields, in config/portal.example.yaml
COSMETICS = 10


def scored(
    category: Category = "detractor",
    score: int | None = None,
    *,
    kind: Kind = "equipment",
    item_id: int = 501,
    sku: str | None = None,
    category_id: int | None = None,
    service_request: bool = False,
    contact_id: int | None = 42,
    comment: str | None = "It stopped heating",
    version: int = 0,
    supersedes: Category | None = None,
) -> NpsScored:
    """A scored answer as scoring publishes it; `version` moves `updated_at` on by minutes."""
    default_score = {"promoter": 9, "passive": 7, "detractor": 3}[category]
    sku = sku or ("EQ-LASER-A" if kind == "equipment" else "COS-SERUM")
    category_id = (
        category_id
        if category_id is not None
        else (EQUIPMENT if kind == "equipment" else COSMETICS)
    )
    answer = ScoredAnswer(
        answer_id=f"m1:{item_id}:{sku}",
        portal=PortalRef(member_id="m1"),
        entity_type_id=1038,
        item_id=item_id,
        category_id=category_id,
        segment="Laser A" if kind == "equipment" else "Cosmetics",
        kind=kind,
        sku=sku,
        product_name="Laser A" if kind == "equipment" else "Serum",
        scale="0-10",
        score=default_score if score is None else score,
        category=category,
        comment=comment,
        service_request=service_request,
        contact_id=contact_id,
        responsible_id=7,
        submitted_at=SUBMITTED,
        updated_at=SUBMITTED + timedelta(minutes=version),
    )
    return NpsScored(
        correlation_id=f"corr-{item_id}",
        answer=answer,
        supersedes=supersedes is not None,
        previous_category=supersedes,
    )
