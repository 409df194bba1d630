"""Submissions as ingest publishes them, for the scoring tests and the pages built on scores."""

from __future__ import annotations

from typing import Any

from shared.events import FormSubmitted

T0 = "2024-03-05T10:00:00+03:00"
"""When a `make_submission` was submitted and last updated, unless told otherwise."""


def make_submission(
    *scores: tuple[str, int | None],
    item_id: int = 1,
    member_id: str = "m-unit",
    updated_at: str = T0,
    submitted_at: str = T0,
    kind: str = "cosmetics",
    category_id: int = 10,
    segment: str = "Cosmetics",
    scale: str = "0-10",
    **overrides: Any,
) -> FormSubmitted:
    """A `form.submitted` with one product answer per (sku, score); the name is the sku lowered."""
    return FormSubmitted.model_validate(
        {
            "correlation_id": f"corr-{member_id}-{item_id}",
            "portal": {"member_id": member_id, "domain": "example.bitrix24.ru"},
            "entity_type_id": 1038,
            "item_id": item_id,
            "category_id": category_id,
            "segment": segment,
            "kind": kind,
            "scale": scale,
            "contact_id": 501,
            "responsible_id": 5,
            "comment": "fine",
            "service_request": False,
            "submitted_at": submitted_at,
            "updated_at": updated_at,
            "answers": [{"sku": sku, "name": sku.lower(), "score": score} for sku, score in scores],
            **overrides,
        }
    )
