"""`crossed`: what landed on a portal other than the answer's, across the portals of one run.

Each portal has its own records (the sandbox gives every portal ids of its own, so a record id
names one portal only) and its own rows in the pipeline's tables (keyed by its member_id). A
crossing is any of:
- a lead or task in one portal created for an action the pipeline recorded under another
  portal, or naming another portal's contact or deal;
- a row the pipeline recorded under one portal (a scored item, a current answer, a contact
  write) that names another portal's item, deal or contact.
Pure: the facts are read by `portals.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ItemRef = tuple[int, int]
"""(entity type, id): an NPS item, or a deal (entity type 2)."""
DEAL = 2


@dataclass(frozen=True)
class Created:
    """A lead or task in a portal: its origin (the crm_sync action it was created for) and what
    it names."""

    kind: str
    id: int
    origin: str | None = None
    contact: int | None = None
    deals: tuple[int, ...] = ()


@dataclass(frozen=True)
class PortalFacts:
    """One portal: what it holds (`items`, `contacts`, the leads and tasks `created` in it) and
    what the pipeline recorded under its key (`scored`, `answer_contacts`, `actions`,
    `written_contacts`)."""

    name: str
    items: frozenset[ItemRef] = frozenset()
    contacts: frozenset[int] = frozenset()
    created: tuple[Created, ...] = ()
    scored: frozenset[ItemRef] = frozenset()
    answer_contacts: frozenset[int] = frozenset()
    actions: frozenset[str] = frozenset()
    written_contacts: frozenset[int] = frozenset()


def crossings(portals: Sequence[PortalFacts]) -> list[str]:
    """Every crossing between `portals` (module doc), each a line naming both portals; none
    with a single portal."""
    found: list[str] = []
    for here in portals:
        others = [other for other in portals if other.name != here.name]
        for other in others:
            _created_for(found, here, other)
            _recorded_of(found, here, other)
    return found


def _created_for(found: list[str], here: PortalFacts, other: PortalFacts) -> None:
    """Leads and tasks in `here` that belong to `other`."""
    for record in here.created:
        where = f"{record.kind} {record.id} in {here.name}"
        if record.origin is not None and record.origin in other.actions:
            found.append(f"{where} for {other.name}'s action {record.origin}")
        if record.contact is not None and record.contact in other.contacts:
            found.append(f"{where} names {other.name}'s contact {record.contact}")
        for deal in record.deals:
            if (DEAL, deal) in other.items:
                found.append(f"{where} bound to {other.name}'s deal {deal}")


def _recorded_of(found: list[str], here: PortalFacts, other: PortalFacts) -> None:
    """Rows recorded under `here` that name `other`'s records."""
    for entity, item in sorted(here.scored & other.items):
        found.append(f"{here.name} scored {other.name}'s item {entity}/{item}")
    for contact in sorted(here.answer_contacts & other.contacts):
        found.append(f"{here.name}'s answer names {other.name}'s contact {contact}")
    for contact in sorted(here.written_contacts & other.contacts):
        found.append(f"{here.name}'s contact write on {other.name}'s contact {contact}")
