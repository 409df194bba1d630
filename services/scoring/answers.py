"""What a survey submission does to the stored answers: pure, no I/O
(docs/scoring.md, Answers and versions).

`reconcile()` takes a `form.submitted` and the answers already stored for the same survey item and
returns the rows to write, the `nps.scored` events to publish and the change to the daily rollup:

- one row per product answer, `answer_id` = portal key + item id + sku; a skipped answer is stored
  with `score=None` and is neither counted nor published;
- a newer version of the item replaces the rows in place (`revision` grows); an answer that changed
  is published again with `supersedes=True` and its previous score and category when it had been
  scored before; an answer whose content did not change is not published again;
- a product ticked in an earlier version but not in this one is retracted (`current=False`), so it
  no longer counts.

Whether the submission is newer than what is stored is decided by the caller (it needs a lock).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime

from services.scoring.nps import NpsAggregate, ScoreError, categorize
from shared.events import (
    DEAL_ENTITY_TYPE_ID,
    Category,
    FormSubmitted,
    Kind,
    NpsScored,
    PortalRef,
    Scale,
    ScoredAnswer,
)


class SubmissionError(ValueError):
    """The submission can never be scored (off-scale score, a product listed twice)."""


def answer_id(portal_key: str, entity_type_id: int, item_id: int, sku: str) -> str:
    """The stable id of one product answer of one survey item; a deal's item part is `D_<id>`
    (Bitrix24's own code for a deal), so a deal and a smart-process item never share one."""
    item = f"D_{item_id}" if entity_type_id == DEAL_ENTITY_TYPE_ID else str(item_id)
    return f"{portal_key}:{item}:{sku}"


@dataclass(frozen=True, order=True)
class RollupKey:
    """One cell of the daily rollup: the finest grain every report is summed from."""

    portal: str
    category_id: int
    sku: str
    responsible_id: int
    day: date


NO_MANAGER = 0
"""`responsible_id` of answers without a responsible manager (Bitrix24 user ids start at 1)."""


@dataclass(frozen=True)
class AnswerRow:
    """One stored product answer (the `scoring_answers` row)."""

    answer_id: str
    portal: str
    entity_type_id: int
    item_id: int
    category_id: int
    segment: str
    kind: Kind
    sku: str
    product_name: str
    scale: Scale
    score: int | None
    category: Category | None
    comment: str | None
    service_request: bool
    contact_id: int | None
    responsible_id: int | None
    submitted_at: datetime
    updated_at: datetime
    day: date
    """The calendar day of `submitted_at` in the offset the portal sent it with (its local day)."""
    current: bool
    """False once retracted: the product is not ticked in a newer version of the item."""
    revision: int
    source_event_id: uuid.UUID

    def content(self) -> tuple[object, ...]:
        """Everything an answer says; two versions with equal content are the same answer."""
        return (
            self.category_id,
            self.segment,
            self.kind,
            self.product_name,
            self.scale,
            self.score,
            self.comment,
            self.service_request,
            self.contact_id,
            self.responsible_id,
            self.submitted_at,
            self.current,
        )

    def contribution(self) -> dict[RollupKey, NpsAggregate]:
        """What this row adds to the rollup: nothing when retracted or skipped."""
        if not self.current or self.score is None or self.category is None:
            return {}
        key = RollupKey(
            self.portal,
            self.category_id,
            self.sku,
            self.responsible_id if self.responsible_id is not None else NO_MANAGER,
            self.day,
        )
        return {key: NpsAggregate.of(self.score, self.category)}

    def scored(self, portal: PortalRef) -> ScoredAnswer:
        """The answer as `nps.scored` carries it (only for a scored answer)."""
        if self.score is None or self.category is None:
            raise ValueError(f"answer {self.answer_id} is skipped: it has no score to publish")
        return ScoredAnswer(
            answer_id=self.answer_id,
            portal=portal,
            entity_type_id=self.entity_type_id,
            item_id=self.item_id,
            category_id=self.category_id,
            segment=self.segment,
            kind=self.kind,
            sku=self.sku,
            product_name=self.product_name,
            scale=self.scale,
            score=self.score,
            category=self.category,
            comment=self.comment,
            service_request=self.service_request,
            contact_id=self.contact_id,
            responsible_id=self.responsible_id,
            submitted_at=self.submitted_at,
            updated_at=self.updated_at,
            revision=self.revision,
        )


@dataclass(frozen=True)
class Change:
    """What one submission does: rows to write, events to publish, rollup cells to adjust."""

    rows: list[AnswerRow]
    events: list[NpsScored]
    rollup: dict[RollupKey, NpsAggregate]


def _row(submission: FormSubmitted, sku: str, name: str, score: int | None) -> AnswerRow:
    category: Category | None = None
    if score is not None:
        try:
            category = categorize(score, submission.scale)
        except ScoreError as exc:
            raise SubmissionError(
                f"item {submission.item_id}, product {sku}: score {score} rejected: {exc}"
            ) from None
    return AnswerRow(
        answer_id=answer_id(
            submission.portal.key, submission.entity_type_id, submission.item_id, sku
        ),
        portal=submission.portal.key,
        entity_type_id=submission.entity_type_id,
        item_id=submission.item_id,
        category_id=submission.category_id,
        segment=submission.segment,
        kind=submission.kind,
        sku=sku,
        product_name=name,
        scale=submission.scale,
        score=score,
        category=category,
        comment=submission.comment,
        service_request=submission.service_request,
        contact_id=submission.contact_id,
        responsible_id=submission.responsible_id,
        submitted_at=submission.submitted_at,
        updated_at=submission.updated_at,
        day=submission.submitted_at.date(),
        current=True,
        revision=1,
        source_event_id=submission.event_id,
    )


def _add(into: dict[RollupKey, NpsAggregate], cells: Mapping[RollupKey, NpsAggregate]) -> None:
    for key, value in cells.items():
        into[key] = into.get(key, NpsAggregate()) + value


def reconcile(submission: FormSubmitted, previous: Mapping[str, AnswerRow]) -> Change:
    """Apply a (newer) version of a survey item to its stored answers `previous` (by answer id).

    Raises `SubmissionError` naming the item, product and score when any score is off the scale
    or a product appears twice; nothing of the submission is applied then.
    """
    skus = [answer.sku for answer in submission.answers]
    repeated = sorted({sku for sku in skus if skus.count(sku) > 1})
    if repeated:
        raise SubmissionError(
            f"item {submission.item_id}: product(s) {', '.join(repeated)} answered more than once"
        )
    incoming = [_row(submission, a.sku, a.name, a.score) for a in submission.answers]
    rows: list[AnswerRow] = []
    events: list[NpsScored] = []
    delta: dict[RollupKey, NpsAggregate] = {}
    for fresh in incoming:
        old = previous.get(fresh.answer_id)
        changed = old is None or old.content() != fresh.content()
        new = fresh if old is None else replace(fresh, revision=old.revision + int(changed))
        if old is not None:
            _add(delta, {k: -v for k, v in old.contribution().items()})
        _add(delta, new.contribution())
        rows.append(new)
        if changed and new.score is not None:
            was_scored = old is not None and old.current and old.score is not None
            events.append(
                NpsScored(
                    **submission.caused("scored", new.sku),
                    answer=new.scored(submission.portal),
                    supersedes=was_scored,
                    previous_category=old.category if was_scored and old else None,
                    previous_score=old.score if was_scored and old else None,
                )
            )
    answered = {row.answer_id for row in incoming}
    for old in previous.values():
        if old.answer_id in answered or not old.current:
            continue
        _add(delta, {k: -v for k, v in old.contribution().items()})
        rows.append(
            replace(
                old,
                current=False,
                revision=old.revision + 1,
                updated_at=submission.updated_at,
                source_event_id=submission.event_id,
            )
        )
    nonzero = {key: value for key, value in delta.items() if value != NpsAggregate()}
    return Change(rows=rows, events=events, rollup=nonzero)
