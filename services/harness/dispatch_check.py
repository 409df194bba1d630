"""The chaos verdict's judgement of dispatch (pure: no I/O; docs/dispatch.md): what the portal
and the local inbox finally hold compared with dispatch's register.

- **lost**: a won sale of a `dispatch.sales` funnel without its request (the funnel's survey, one
  per mapped product), a request still waiting (scheduled, never sent), a request skipped or
  failed for a reason the portal does not bear out, a send the register records with no message
  in the inbox (or one to another address), a deal survey's request without its NPS deal;
- **duplicated**: two requests for one sale and survey, a message more than once for one send
  of a request without a fault that explains it, a message for a send the register does not
  record, two NPS deals for one request;
- **resent**: the one case dispatch documents (One message per request): the SMTP server
  accepted a message, then the process died (or lost its database) before recording it, so the
  message went again. A second copy counts here only when a fault that can do that
  (`RESEND_FAULTS`) was under way between the two copies, one copy per fault; any other copy
  is duplicated. Counted apart, never hidden.

The rules are restated here from the docs on purpose (which sale asks which survey, when a
skip is right), so a dispatch bug shows up instead of agreeing with itself.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from shared.portal_config import PortalConfig

RESEND_FAULTS = frozenset({"kill:dispatch", "kill:all", "db-restart"})
"""Faults that can come between the SMTP server's acceptance of a message and dispatch's record
of it: the process killed, or its database gone."""
SLACK_S = 1.0
"""Clock slack when a copy's reception time is compared with a fault's (one machine)."""
NO_ADDRESS = "the contact has no e-mail address"
_MESSAGE_ID = re.compile(
    r"[<.](?P<request>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"\.(?P<n>\d+)@b24-nps>$"
)
SALE_SOURCES = frozenset({"sale", "robot"})
SENT_STATES = frozenset({"sent", "opened", "answered", "reminded", "unanswered", "expired"})


@dataclass(frozen=True)
class Incident:
    """A fault injected into the stack, from when it began to when the stack was back (Unix
    time)."""

    fault: str
    started: float
    ended: float


@dataclass(frozen=True)
class Sale:
    """A won sales deal: its funnel and the products of its rows."""

    deal_id: int
    category_id: int
    products: tuple[int, ...]


@dataclass(frozen=True)
class Copy:
    """One message in the inbox."""

    message_id: str
    received: float
    recipients: tuple[str, ...]


@dataclass
class DispatchFacts:
    requests: Sequence[Mapping[str, Any]]
    """The register's rows (`services.dispatch.read.requests`)."""
    messages: Sequence[Mapping[str, Any]]
    """The inbox's messages (`/inbox.json`)."""
    evicted: int
    """Messages the inbox accepted but no longer keeps (it keeps the last 1,000)."""
    sales: Sequence[Sale]
    nps_deals: Mapping[str, Sequence[int]]
    """NPS deals of the deal surveys' funnels by their `originId`."""
    emails: Mapping[int, str | None]
    """Each contact's first e-mail address (None: it has none)."""
    incidents: Sequence[Incident] = ()


@dataclass
class DispatchFindings:
    requests: int = 0
    sent: int = 0
    """Requests with at least one message."""
    messages: int = 0
    states: dict[str, int] = field(default_factory=dict)
    """Requests per state of the register."""
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    """Extra copies the documented exception explains (one note per copy)."""


def send_key(message_id: str | None) -> tuple[str, int] | None:
    """(request id, send number) of a survey message, from its `Message-ID`, which dispatch
    builds from them (`<request id>.<n>@b24-nps`, with or without a unique prefix before the
    request id); None for another message."""
    found = _MESSAGE_ID.search(message_id or "")
    return None if found is None else (found["request"], int(found["n"]))


def expected_surveys(sale: Sale, config: PortalConfig) -> list[str]:
    """The surveys a won sale asks (restated): its funnel's deal survey and one equipment survey
    per distinct product mapped to a segment's SKU."""
    dispatch = config.dispatch
    trigger = None if dispatch is None else dispatch.sale_trigger(sale.category_id)
    if dispatch is None or trigger is None:
        return []
    surveys = [trigger.survey] if trigger.survey else []
    if trigger.products:
        for product in sale.products:
            sku = dispatch.products.get(str(product))
            segment = None if sku is None else config.equipment_segment(sku)
            if segment is not None and segment.name and segment.name not in surveys:
                surveys.append(segment.name)
    return surveys


def judge(facts: DispatchFacts, config: PortalConfig) -> DispatchFindings:
    found = DispatchFindings(
        requests=len(facts.requests),
        messages=len(facts.messages),
        states=dict(Counter(str(row["state"]) for row in facts.requests).most_common()),
    )
    if facts.evicted:
        found.lost.append(
            f"the inbox dropped {facts.evicted} older message(s) (it keeps 1,000): run fewer"
            " sales or a smaller campaign, the sends cannot be counted"
        )
    _check_sales(found, facts, config)
    _check_states(found, facts)
    _check_messages(found, facts)
    _check_nps_deals(found, facts, config)
    return found


def _check_sales(found: DispatchFindings, facts: DispatchFacts, config: PortalConfig) -> None:
    asked: dict[tuple[str, str], int] = Counter(
        (str(row["ref"]), str(row["survey"]))
        for row in facts.requests
        if row["source"] in SALE_SOURCES
    )
    for sale in facts.sales:
        wanted = expected_surveys(sale, config)
        for survey in wanted:
            count = asked.get((str(sale.deal_id), survey), 0)
            if count == 0:
                found.lost.append(f"sale {sale.deal_id}: no request for {survey!r}")
            elif count > 1:
                found.duplicated.append(f"sale {sale.deal_id}: {count} requests for {survey!r}")
        known = {(str(sale.deal_id), survey) for survey in wanted}
        for (ref, survey), count in asked.items():
            if ref == str(sale.deal_id) and (ref, survey) not in known:
                found.duplicated.append(
                    f"sale {sale.deal_id}: {count} request(s) for {survey!r}, which it does not ask"
                )


def _check_states(found: DispatchFindings, facts: DispatchFacts) -> None:
    earlier: dict[tuple[int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in facts.requests:
        if row["state"] != "skipped":
            earlier[(int(row["contact_id"]), str(row["survey"]))].append(row)
    for row in facts.requests:
        request, state, reason = row["request_id"], row["state"], row["reason"]
        contact = int(row["contact_id"])
        if state == "skipped":
            if reason == "asked_recently":
                before = [
                    other
                    for other in earlier[(contact, str(row["survey"]))]
                    if other["created_at"] <= row["created_at"] and other["request_id"] != request
                ]
                if not before:
                    found.lost.append(
                        f"request {request} skipped as asked recently, but contact {contact} was"
                        f" not asked about {row['survey']!r} before"
                    )
            elif not (reason == "no_contact" and contact == 0):
                found.lost.append(f"request {request} skipped: {reason}")
        elif state == "failed":
            if reason != NO_ADDRESS or facts.emails.get(contact) is not None:
                found.lost.append(f"request {request} failed: {reason}")
        elif state not in SENT_STATES or int(row["sends"]) == 0:
            found.lost.append(
                f"request {request} never sent (state {state}, NPS deal {row['nps_deal_id']})"
            )


def _copies(messages: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, int], list[Copy]], int]:
    by_send: dict[tuple[str, int], list[Copy]] = defaultdict(list)
    foreign = 0
    for message in messages:
        key = send_key(message.get("message_id"))
        if key is None:
            foreign += 1
            continue
        recipients = tuple(
            str(address).lower()
            for address in (*(message.get("envelope_to") or ()), message.get("to") or "")
        )
        by_send[key].append(
            Copy(str(message["message_id"]), float(message["received"]), recipients)
        )
    for copies in by_send.values():
        copies.sort(key=lambda copy: copy.received)
    return by_send, foreign


def _check_messages(found: DispatchFindings, facts: DispatchFacts) -> None:
    by_send, foreign = _copies(facts.messages)
    if foreign:
        found.duplicated.append(f"{foreign} message(s) in the inbox that are no survey send")
    incidents = sorted(
        (i for i in facts.incidents if i.fault in RESEND_FAULTS), key=lambda i: i.started
    )
    used: set[int] = set()
    recorded: set[tuple[str, int]] = set()
    for row in facts.requests:
        request, contact = str(row["request_id"]), int(row["contact_id"])
        sends = int(row["sends"])
        if sends:
            found.sent += 1
        address = (facts.emails.get(contact) or "").lower()
        for n in range(sends):
            recorded.add((request, n))
            copies = by_send.get((request, n), [])
            what = f"send {n} of request {request}"
            if not copies:
                if row["channel"] == "email":
                    found.lost.append(f"{what}: recorded as sent, no message in the inbox")
                continue
            if address and not any(address in r for r in copies[0].recipients):
                found.lost.append(f"{what}: to another address than contact {contact}'s")
            _extra_copies(found, what, copies, incidents, used)
    for (request, n), copies in by_send.items():
        if (request, n) not in recorded:
            found.duplicated.append(
                f"{len(copies)} message(s) for send {n} of request {request}, which the"
                " register does not record as sent"
            )


def _extra_copies(
    found: DispatchFindings,
    what: str,
    copies: Sequence[Copy],
    incidents: Sequence[Incident],
    used: set[int],
) -> None:
    """Each copy after the first: the documented exception when an unused fault that can cause
    it came between the previous copy and this one, else a duplicate."""
    for previous, copy in pairwise(copies):
        cause = next(
            (
                index
                for index, incident in enumerate(incidents)
                if index not in used
                and previous.received <= incident.ended + SLACK_S
                and copy.received >= incident.started - SLACK_S
            ),
            None,
        )
        same = (
            "the same Message-ID"
            if copy.message_id == previous.message_id
            else "another Message-ID (dispatch documents the same one)"
        )
        if cause is None:
            found.duplicated.append(
                f"{what}: a message again {copy.received - previous.received:.1f} s later with"
                f" {same}, no fault in between"
            )
        else:
            used.add(cause)
            found.resent.append(
                f"{what}: a message again after {incidents[cause].fault} (accepted before the"
                f" crash, not recorded), {same}"
            )


def _check_nps_deals(found: DispatchFindings, facts: DispatchFacts, config: PortalConfig) -> None:
    deal_surveys = {survey.name for survey in config.deal_surveys}
    requests = {str(row["request_id"]): row for row in facts.requests}
    for row in facts.requests:
        request = str(row["request_id"])
        deals = list(facts.nps_deals.get(request, ()))
        if str(row["reason"] or "").startswith("NPS deal not created"):
            continue  # lost already, with the portal's reason
        if row["survey"] not in deal_surveys or row["state"] == "skipped":
            if deals:
                found.duplicated.append(f"request {request}: NPS deal(s) {deals} it does not ask")
            continue
        if not deals:
            found.lost.append(f"request {request}: no NPS deal with its originId")
        elif len(deals) > 1:
            found.duplicated.append(f"request {request}: {len(deals)} NPS deals {sorted(deals)}")
        elif row["nps_deal_id"] is not None and int(row["nps_deal_id"]) != deals[0]:
            found.lost.append(
                f"request {request}: the register names NPS deal {row['nps_deal_id']}, the"
                f" portal's is {deals[0]}"
            )
    for origin, created in facts.nps_deals.items():
        if origin not in requests:
            found.duplicated.append(f"NPS deal(s) {list(created)} for no request ({origin})")
