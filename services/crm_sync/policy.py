"""The legacy-safe contact patch: what one survey answer may write into a contact card
(docs/crm_sync.md).

Pure: no I/O and no clock. Every decision of the contact writer is made here, over plain data;
`contacts.ContactWriter` only reads, calls these functions, writes and records what they return:

- `plan_answer()`: what an answer writes (`plan_patch()`: a decision per field), after taking in
  the writes an earlier attempt sent without recording them (`recovered` in the audit);
- `plan_repairs()`: what puts back a person's edit that our write replaced;
- `settle_writes()`: what the verify read shows of each write once sent: its audit, the repairs
  owed (`overwritten()`), the ledger and the conflicts (`conclude()`), the outcome and details.

1. Only the segment's `contact_fields` are touched, and only those whose value would change.
2. A scalar field (score, date) that is empty is written. One that still holds the value b24-nps
   wrote last (the ledger's `owned_value`) may be replaced by a newer answer. Anything else is a
   legacy or hand-edited value: it is never overwritten, the decision is a conflict.
3. Answers are ordered by `Version`: submitted, then updated, then the item id as a number (Bitrix24
   item ids grow with time, so of two items submitted in the same second the later one wins), then
   the answer id (one item's products), then the answer's revision (one answer changed within
   the same second). An answer older than the newest one already decided for
   the segment's fields is ignored as a whole, so out-of-order deliveries never replace a newer
   score with an older one.
4. The history field (multiple) is append-only: the full current list plus the answer's entry,
   and only when that entry is not there yet (a retry never appends it twice).
5. Every write is audited: which, with what before and after, is decided here (`Audit`); the
   caller records it (see `store.py`).

Values are compared the way a person reads them: `"9"`, `"9.0"` and `9` are equal, a date equals
the same date at midnight (`2025-03-14` and `2025-03-14T00:00:00+03:00`), and `None`, `""`,
`false` and `[]` are all empty.

`merge()` repairs the one race Bitrix24 cannot exclude: a manual edit landing between our read and
our write (see docs/crm_sync.md).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from shared.events import RouteAction, ScoredAnswer, WriteOutcome
from shared.portal_config import ContactFields, EquipmentSegment, PortalConfig

Role = Literal["score", "date", "history"]
Verdict = Literal["write", "keep", "conflict", "stale"]
Reason = Literal[
    "empty",
    "ours",
    "same_value",
    "legacy",
    "hand_edited",
    "older_answer",
    "appended",
    "already_logged",
    "not_a_list",
]
SCALAR_ROLES: tuple[Role, ...] = ("score", "date")
AuditKind = Literal["answer", "restore", "recovered"]

_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_ISO_DATE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_DOTTED_DATE = re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})(?: 00:00(?::00)?)?$")

Canonical = tuple[str, Any] | tuple[tuple[str, Any], ...] | None


# --- comparing values -----------------------------------------------------------------------


def is_empty(value: Any) -> bool:
    """True for what Bitrix24 shows as an empty field: null, "", false, [] (or only blanks)."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple):
        return all(is_empty(item) for item in value)
    if isinstance(value, dict):
        return not value
    return False


def _scalar_key(value: Any) -> tuple[str, Any]:
    text = str(int(value) if isinstance(value, bool) else value).strip()
    if _NUMBER.match(text):
        with contextlib.suppress(InvalidOperation):
            return ("n", Decimal(text))
    iso = _ISO_DATE.match(text)
    if iso:
        return ("d", iso.group(1))
    dotted = _DOTTED_DATE.match(text)
    if dotted:
        day, month, year = dotted.groups()
        return ("d", f"{year}-{month}-{day}")
    return ("s", text)


def canonical(value: Any) -> Canonical:
    """A comparable form of a field value (see the module docstring)."""
    if is_empty(value):
        return None
    if isinstance(value, list | tuple):
        return tuple(_scalar_key(item) for item in value if not is_empty(item))
    return _scalar_key(value)


def same(left: Any, right: Any) -> bool:
    """True when two field values read the same."""
    return canonical(left) == canonical(right)


def _contains(items: Iterable[Any], value: Any) -> bool:
    return any(same(item, value) for item in items)


# --- what an answer proposes ----------------------------------------------------------------


def score_value(answer: ScoredAnswer) -> str:
    return str(answer.score)


def date_value(answer: ScoredAnswer) -> str:
    """The day the customer answered, in the portal's own offset (as the item carried it)."""
    return answer.submitted_at.date().isoformat()


def history_entry(answer: ScoredAnswer) -> str:
    """One line of the append-only log: readable, and the same line for the same answer."""
    if answer.scale == "binary":
        score = "satisfied" if answer.score == 1 else "not satisfied"
    else:
        score = f"{answer.score}/10"
    return (
        f"{date_value(answer)} {answer.product_name}: {score} (NPS survey, item {answer.item_id})"
    )


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Version:
    """How recent an answer is: a later submission wins; for one submission, a later edit; for
    the same times (Bitrix24 keeps seconds: a double submit, a bulk import), the later item, as
    its id is a number that grows with time; within one item, the answer id (its product), so
    that every order of arrival settles on the same answer; for one answer, its revision."""

    submitted_at: datetime
    updated_at: datetime
    item_id: int
    answer_id: str
    """Compared by code point, as the ledger compares it (`COLLATE "C"`)."""
    revision: int = 0
    """For one answer, its revision in scoring: two states of it within one second (Bitrix24
    keeps seconds) differ only in it."""

    @classmethod
    def of(cls, answer: ScoredAnswer) -> Version:
        return cls(
            answer.submitted_at,
            answer.updated_at,
            answer.item_id,
            answer.answer_id,
            answer.revision,
        )


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows about one contact field."""

    version: Version
    """The newest answer decided for this field."""
    owned_value: Any = None
    """The value b24-nps wrote last and still owns; None when the field holds nothing of ours."""


@dataclass(frozen=True)
class Write:
    """One field update: `value` was computed from `base`, the value the field held when read."""

    field: str
    base: Any
    value: Any


@dataclass(frozen=True)
class FieldDecision:
    field: str
    role: Role
    verdict: Verdict
    reason: Reason
    current: Any
    proposed: Any
    """The value (score, date) or the entry (history) the answer would put there."""
    value: Any = None
    """What to send when `verdict` is "write" (for history: the whole new list)."""
    before_ours: bool = False
    """The value being replaced is b24-nps's own (an undo may restore it as ours)."""
    owned_after: Any = None
    """Score and date: the ledger's `owned_value` once this decision is carried out."""


@dataclass(frozen=True)
class PatchPlan:
    version: Version
    decisions: tuple[FieldDecision, ...]

    @property
    def stale(self) -> bool:
        return any(decision.verdict == "stale" for decision in self.decisions)

    def writes(self) -> tuple[Write, ...]:
        return tuple(
            Write(d.field, d.current, d.value) for d in self.decisions if d.verdict == "write"
        )

    def decision(self, field: str) -> FieldDecision | None:
        return next((d for d in self.decisions if d.field == field), None)

    def conflicts(self) -> tuple[FieldDecision, ...]:
        return tuple(d for d in self.decisions if d.verdict == "conflict")

    def ledger_updates(self) -> tuple[FieldDecision, ...]:
        """Score and date decisions that move the ledger to this answer (none when stale)."""
        return tuple(d for d in self.decisions if d.role in SCALAR_ROLES and d.verdict != "stale")

    def outcome(self) -> WriteOutcome:
        if self.stale:
            return "skipped"
        if self.conflicts():
            return "conflict"
        if self.writes():
            return "patched"
        return "unchanged"


def _scalar(
    field: str,
    role: Role,
    proposed: str,
    current: Any,
    entry: LedgerEntry | None,
) -> FieldDecision:
    owned = entry.owned_value if entry is not None else None
    ours = owned is not None and same(current, owned)
    if same(current, proposed):
        return FieldDecision(
            field, role, "keep", "same_value", current, proposed, owned_after=owned
        )
    if is_empty(current):
        return FieldDecision(
            field, role, "write", "empty", current, proposed, value=proposed, owned_after=proposed
        )
    if ours:
        return FieldDecision(
            field,
            role,
            "write",
            "ours",
            current,
            proposed,
            value=proposed,
            before_ours=True,
            owned_after=proposed,
        )
    reason: Reason = "hand_edited" if owned is not None else "legacy"
    return FieldDecision(field, role, "conflict", reason, current, proposed, owned_after=owned)


def _history(field: str, entry: str, current: Any) -> FieldDecision:
    if is_empty(current):
        items: list[Any] = []
    elif isinstance(current, list | tuple):
        items = list(current)
    else:
        return FieldDecision(field, "history", "conflict", "not_a_list", current, entry)
    if _contains(items, entry):
        return FieldDecision(field, "history", "keep", "already_logged", current, entry)
    return FieldDecision(
        field, "history", "write", "appended", current, entry, value=[*items, entry]
    )


def contact_fields_for(action: RouteAction, config: PortalConfig) -> ContactFields | None:
    """The contact fields the action's segment maps; None when it writes nothing into contacts."""
    segment = config.survey.segment(action.answer.category_id)
    if isinstance(segment, EquipmentSegment):
        return segment.contact_fields
    return None


def targets(fields: ContactFields, answer: ScoredAnswer) -> dict[str, tuple[Role, str]]:
    """Each mapped field with its role and what the answer proposes for it."""
    proposed: dict[str, tuple[Role, str]] = {fields.score: ("score", score_value(answer))}
    if fields.date:
        proposed[fields.date] = ("date", date_value(answer))
    if fields.history:
        proposed[fields.history] = ("history", history_entry(answer))
    return proposed


def field_roles(fields: ContactFields, answer: ScoredAnswer) -> dict[str, Role]:
    """Each mapped field with its role."""
    return {name: role for name, (role, _) in targets(fields, answer).items()}


def plan_patch(
    fields: ContactFields,
    answer: ScoredAnswer,
    current: Mapping[str, Any],
    ledger: Mapping[str, LedgerEntry],
) -> PatchPlan:
    """Decide every mapped field for `answer`, given the contact's `current` values (as read) and
    the `ledger` entries of those fields."""
    version = Version.of(answer)
    wanted = targets(fields, answer)
    decided = [
        ledger[name].version
        for name, (role, _) in wanted.items()
        if role in SCALAR_ROLES and name in ledger
    ]
    newest = max(decided, default=None)
    if newest is not None and version < newest:
        return PatchPlan(
            version,
            tuple(
                FieldDecision(name, role, "stale", "older_answer", current.get(name), proposed)
                for name, (role, proposed) in wanted.items()
            ),
        )
    decisions = [
        _history(name, proposed, current.get(name))
        if role == "history"
        else _scalar(name, role, proposed, current.get(name), ledger.get(name))
        for name, (role, proposed) in wanted.items()
    ]
    return PatchPlan(version, tuple(decisions))


# --- the race between our read and our write ------------------------------------------------


def _added(base: Any, ours: Sequence[Any]) -> list[Any]:
    """The entries of `ours` that `base` did not have (as a multiset, in `ours`' order)."""
    remaining = Counter(
        _scalar_key(item) for item in (base if isinstance(base, list | tuple) else [])
    )
    added = []
    for item in ours:
        key = _scalar_key(item)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            added.append(item)
    return added


def merge(base: Any, ours: Any, theirs: Any) -> Any:
    """Three-way merge of one field: `ours` was computed from `base`, but the field held `theirs`.

    A scalar: theirs wins (a manual edit is never overwritten). A list: theirs plus the entries
    ours added, each once (never fewer values, and the person's own edits kept).
    """
    if same(theirs, base):
        return ours
    if isinstance(ours, list | tuple) and (is_empty(theirs) or isinstance(theirs, list | tuple)):
        result = list(theirs) if isinstance(theirs, list | tuple) else []
        present = Counter(_scalar_key(item) for item in result)
        for item in _added(base, ours):
            key = _scalar_key(item)
            if present[key] > 0:
                present[key] -= 1
            else:
                result.append(item)
        return result
    return theirs


@dataclass(frozen=True)
class Repair:
    """A write of ours replaced a value set while we were writing: put `target` back in place
    of `written`, unless the field changed again since (then it is merged once more)."""

    field: str
    written: Any
    target: Any
    displaced: Any
    """What the field held just before our write (the person's value)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "written": self.written,
            "target": self.target,
            "displaced": self.displaced,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Repair:
        return cls(data["field"], data["written"], data["target"], data["displaced"])

    def write_for(self, current: Any) -> Write | None:
        """The write that carries out this repair on the field's `current` value, if any."""
        value = merge(self.written, self.target, current)
        return None if same(value, current) else Write(self.field, current, value)


def overwritten(write: Write, seen: Any) -> Repair | None:
    """The repair owed when the field held `seen` (not `write.base`) right before `write`."""
    if same(seen, write.base):
        return None
    target = merge(write.base, write.value, seen)
    if same(target, write.value):
        return None
    return Repair(write.field, write.value, target, seen)


# --- the contact writer's steps -------------------------------------------------------------


class Sent(Protocol):
    """A write sent (or about to be): `before_ours` when the value it replaces is b24-nps's own
    (`Outgoing`, or the action's saved intent)."""

    @property
    def write(self) -> Write: ...

    @property
    def before_ours(self) -> bool: ...


@dataclass(frozen=True)
class Outgoing:
    """A write to send, and whether the value it replaces is b24-nps's own (for the audit)."""

    write: Write
    before_ours: bool


@dataclass(frozen=True)
class Audit:
    """One write into the contact, as the audit shows it."""

    field: str
    before: Any
    after: Any
    kind: AuditKind
    before_ours: bool


@dataclass(frozen=True)
class Owned:
    """The ledger's new entry for a field: b24-nps owns `value` (None: nothing), by `version`."""

    field: str
    value: Any
    version: Version


@dataclass(frozen=True)
class Conflict:
    """A value left alone: `current` is the person's, `proposed` what the answer had for it."""

    field: str
    reason: Reason | Literal["edited_during_write"]
    current: Any
    proposed: Any


@dataclass(frozen=True)
class Effects:
    """What one step records about one contact."""

    audit: tuple[Audit, ...] = ()
    owned: tuple[Owned, ...] = ()
    conflicts: tuple[Conflict, ...] = ()


@dataclass(frozen=True)
class Step:
    """What one round does for one contact: the writes to send and what to record now."""

    sends: tuple[Outgoing, ...]
    effects: Effects


@dataclass(frozen=True)
class AnswerStep(Step):
    """A round for an answer, with its plan (to conclude once the writes are done)."""

    plan: PatchPlan


def plan_answer(
    fields: ContactFields,
    answer: ScoredAnswer,
    current: Mapping[str, Any],
    ledger: Mapping[str, LedgerEntry],
    sent: Iterable[Sent] = (),
) -> AnswerStep:
    """The writes `answer` owes the contact (`plan_patch()`), given its `current` values, the
    `ledger` entries of its fields and the writes `sent` by an attempt that stopped before
    recording them: those that show in the contact did happen; they are recorded as ours
    (audit `recovered`, and the ledger for a score or date) before deciding afresh."""
    version = Version.of(answer)
    mapped = field_roles(fields, answer)
    entries = dict(ledger)
    audit: list[Audit] = []
    owned: list[Owned] = []
    for intent in sent:
        write = intent.write
        if write.field not in mapped or not same(current.get(write.field), write.value):
            continue
        audit.append(Audit(write.field, write.base, write.value, "recovered", intent.before_ours))
        if mapped[write.field] in SCALAR_ROLES:
            entries[write.field] = LedgerEntry(version, write.value)
            owned.append(Owned(write.field, write.value, version))
    plan = plan_patch(fields, answer, current, entries)
    sends = tuple(
        Outgoing(write, decision.before_ours)
        for write in plan.writes()
        if (decision := plan.decision(write.field)) is not None
    )
    return AnswerStep(sends, Effects(audit=tuple(audit), owned=tuple(owned)), plan)


def plan_repairs(
    repairs: Iterable[Repair], current: Mapping[str, Any], sent: Iterable[Sent] = ()
) -> Step:
    """The writes that carry out `repairs` on the contact's `current` values; the restores `sent`
    by an attempt that stopped before recording them are audited if they show in the contact."""
    restored = tuple(
        Audit(write.field, write.base, write.value, "restore", True)
        for write in (intent.write for intent in sent)
        if same(current.get(write.field), write.value)
    )
    sends = tuple(
        Outgoing(write, True)
        for repair in repairs
        if (write := repair.write_for(current.get(repair.field)))
    )
    return Step(sends, Effects(audit=restored))


def conclude(plan: PatchPlan, clobbered: frozenset[str] = frozenset()) -> Effects:
    """The ledger and the conflicts of an answer's plan, once its writes (if any) are done. A
    score or date a person set while we wrote it (`clobbered`) is theirs again: the ledger owns
    the value our write replaced only if that one was ours."""
    owned = tuple(
        Owned(
            d.field,
            (d.current if d.before_ours else None) if d.field in clobbered else d.owned_after,
            plan.version,
        )
        for d in plan.ledger_updates()
    )
    conflicts = tuple(Conflict(d.field, d.reason, d.current, d.proposed) for d in plan.conflicts())
    return Effects(owned=owned, conflicts=conflicts)


def plan_details(plan: PatchPlan, contact_id: int) -> dict[str, Any]:
    """The details of the `crm.written.contact` event announcing `plan`."""
    writes = [d for d in plan.decisions if d.verdict == "write"]
    return {
        "contact_id": contact_id,
        "written": {d.field: d.value for d in writes if d.role != "history"},
        "appended": {d.field: d.proposed for d in writes if d.role == "history"},
        "kept": {d.field: d.reason for d in plan.decisions if d.verdict == "keep"},
        "conflicts": [{"field": d.field, "reason": d.reason} for d in plan.conflicts()],
        "stale": plan.stale,
    }


@dataclass(frozen=True)
class Settled:
    """A contact's writes once the portal has carried them out."""

    effects: Effects
    repairs: tuple[Repair, ...]
    """Owed when a person edited a field between our read and our write (another round)."""
    outcome: WriteOutcome | None
    details: dict[str, Any]


def settle_writes(
    sent: Iterable[Sent],
    seen: Mapping[str, Any] | None,
    *,
    plan: PatchPlan | None,
    roles: Mapping[str, Role],
    outcome: WriteOutcome | None,
    details: Mapping[str, Any],
) -> Settled:
    """What to record of the writes `sent` (an answer's when `plan` is given, else restores),
    given the verify read `seen` right before them (None when it failed: each write is taken to
    have replaced the value it was decided on).

    A field that held something else was edited in between: a repair is owed. A score or date
    (or a field the answer no longer maps) edited so is a conflict `edited_during_write`, and the
    outcome becomes `conflict`; a history list is merged without one."""
    kind: AuditKind = "answer" if plan is not None else "restore"
    audit: list[Audit] = []
    repairs: list[Repair] = []
    for intent in sent:
        write = intent.write
        before = write.base if seen is None else seen.get(write.field)
        audit.append(Audit(write.field, before, write.value, kind, intent.before_ours))
        repair = None if seen is None else overwritten(write, before)
        if repair is not None:
            repairs.append(repair)
    clobbered = frozenset(
        r.field for r in repairs if (role := roles.get(r.field)) is None or role in SCALAR_ROLES
    )
    concluded = conclude(plan, clobbered) if plan is not None else Effects()
    edited = tuple(
        Conflict(
            name,
            "edited_during_write",
            next(r.displaced for r in repairs if r.field == name),
            decision.proposed
            if plan is not None and (decision := plan.decision(name)) is not None
            else None,
        )
        for name in sorted(clobbered)
    )
    new_details = dict(details)
    if clobbered:
        outcome = "conflict"
        new_details["conflicts"] = [
            *new_details.get("conflicts", []),
            *({"field": name, "reason": "edited_during_write"} for name in sorted(clobbered)),
        ]
    if repairs:
        new_details["repaired"] = sorted(
            {*new_details.get("repaired", []), *(r.field for r in repairs)}
        )
    effects = Effects(tuple(audit), concluded.owned, (*concluded.conflicts, *edited))
    return Settled(effects, tuple(repairs), outcome, new_details)
