"""The weekly digest (docs/dashboard.md, The weekly digest): when an edition is due, the weeks it
compares, and the e-mail (subject, text and HTML from the Jinja2 templates of
`templates/digest/`, per language). Pure: no I/O beyond the package's templates.

An edition is scheduled at `dispatch.digest.weekday` and `time` in the portal's time zone and
reports the 7 days before its day against the 7 days before those. It is sent once (recorded
by `digest_job.py`), and only within `LATE` of its moment: a reports service started days later
does not mail last week's digest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from shared.dispatch_config import WEEKDAYS, Digest

LATE = timedelta(hours=24)
"""How late an edition may still go out (the service was down at its moment)."""
COMMENT_CHARS = 400
"""A quoted comment is cut to this many characters."""

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "NPS weekly digest {start} – {end}: {nps}",
        "title": "NPS weekly digest",
        "week": "{start} – {end}",
        "nps": "NPS",
        "previous": "the week before",
        "change": "change",
        "answers": "answers",
        "margin": "margin of error ±{margin}",
        "few": "too few answers to rely on",
        "no_answers": "no answers",
        "promoters": "promoters",
        "passives": "passives",
        "detractors": "detractors",
        "comments": "The worst comments",
        "no_comments": "No comments this week.",
        "overdue": "Overdue follow-ups",
        "no_overdue": "Nothing is overdue: every lead and task was handled in time.",
        "overdue_more": "and {more} more",
        "hours_overdue": "{hours} h overdue",
        "escalated": "escalated",
        "responsible": "responsible",
        "nobody": "nobody",
        "service": "service lead",
        "marketing": "marketing lead",
        "task": "detractor task",
        "call_task": "call task",
        "escalation": "escalation task",
        "footer": "Sent by b24-nps every {weekday} at {time} ({tz}).",
    },
    "ru": {
        "subject": "Сводка NPS за неделю {start} – {end}: {nps}",
        "title": "Сводка NPS за неделю",
        "week": "{start} – {end}",
        "nps": "NPS",
        "previous": "неделей ранее",
        "change": "изменение",
        "answers": "ответов",
        "margin": "погрешность ±{margin}",
        "few": "слишком мало ответов, чтобы полагаться на число",
        "no_answers": "нет ответов",
        "promoters": "промоутеры",
        "passives": "нейтралы",
        "detractors": "критики",
        "comments": "Худшие комментарии",
        "no_comments": "За неделю комментариев нет.",
        "overdue": "Просроченные обращения",
        "no_overdue": "Просроченных нет: все лиды и задачи обработаны вовремя.",
        "overdue_more": "и ещё {more}",
        "hours_overdue": "просрочено на {hours} ч",
        "escalated": "эскалировано",
        "responsible": "ответственный",
        "nobody": "не назначен",
        "service": "сервисный лид",
        "marketing": "маркетинговый лид",
        "task": "задача по критику",
        "call_task": "задача на звонок",
        "escalation": "задача эскалации",
        "footer": "Отправлено b24-nps каждую неделю ({weekday}, {time}, {tz}).",
    },
}
_ENV = Environment(
    loader=PackageLoader("services.reports", "templates/digest"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Edition:
    """One week's digest: its scheduled moment and the two weeks it compares (local days,
    inclusive)."""

    scheduled: datetime
    day: date
    start: date
    end: date
    previous_start: date
    previous_end: date


def edition(now: datetime, digest: Digest, tz: ZoneInfo) -> Edition:
    """The latest edition scheduled at or before `now`."""
    local = now.astimezone(tz)
    back = (local.weekday() - WEEKDAYS.index(digest.weekday)) % 7
    day = local.date() - timedelta(days=back)
    scheduled = datetime.combine(day, digest.time, tz)
    if scheduled > local:
        day -= timedelta(days=7)
        scheduled = datetime.combine(day, digest.time, tz)
    return Edition(
        scheduled=scheduled,
        day=day,
        start=day - timedelta(days=7),
        end=day - timedelta(days=1),
        previous_start=day - timedelta(days=14),
        previous_end=day - timedelta(days=8),
    )


def due(now: datetime, ed: Edition) -> bool:
    """Whether the edition may go out at `now` (from its moment, for `LATE`)."""
    return ed.scheduled <= now < ed.scheduled + LATE


@dataclass(frozen=True)
class Figures:
    """A week's NPS (None without answers), its margin of error and whether it rests on too few
    answers."""

    nps: float | None
    margin: float | None
    answers: int
    promoters: int
    passives: int
    detractors: int
    few: bool

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Figures:
        """From a report row as `ReportRow.as_dict` gives it (None: no answers)."""
        if row is None:
            return cls(None, None, 0, 0, 0, 0, False)
        return cls(
            nps=row.get("nps"),
            margin=row.get("margin"),
            answers=int(row.get("answers") or 0),
            promoters=int(row.get("promoters") or 0),
            passives=int(row.get("passives") or 0),
            detractors=int(row.get("detractors") or 0),
            few=bool(row.get("few_answers")),
        )


def change(week: Figures, previous: Figures) -> float | None:
    """The NPS's change against the week before, in points (None when either has none)."""
    if week.nps is None or previous.nps is None:
        return None
    return round(week.nps - previous.nps, 1)


@dataclass(frozen=True)
class Comment:
    score: int
    product: str
    text: str
    day: date


def worst_comments(rows: Iterable[Mapping[str, Any]], count: int) -> list[Comment]:
    """The `count` lowest-scored answers with a comment (the newest first among equal scores),
    each comment cut to `COMMENT_CHARS`."""
    answered = [
        row
        for row in rows
        if row.get("score") is not None and str(row.get("comment") or "").strip()
    ]
    answered.sort(key=lambda row: row["submitted_at"], reverse=True)
    answered.sort(key=lambda row: int(row["score"]))
    chosen = []
    for row in answered[:count]:
        text = " ".join(str(row["comment"]).split())
        if len(text) > COMMENT_CHARS:
            text = text[: COMMENT_CHARS - 1].rstrip() + "…"
        chosen.append(
            Comment(
                score=int(row["score"]),
                product=str(row.get("product_name") or row.get("sku") or ""),
                text=text,
                day=row["submitted_at"].date(),
            )
        )
    return chosen


@dataclass(frozen=True)
class Overdue:
    action: str
    entity_type: str
    entity_id: int
    responsible: str | None
    hours_overdue: float
    escalated: bool


def overdue_items(rows: Iterable[Mapping[str, Any]], names: Mapping[int, str]) -> list[Overdue]:
    """The overdue follow-ups as the digest lists them, responsibles by name when known."""
    items = []
    for row in rows:
        responsible = row.get("responsible_id")
        items.append(
            Overdue(
                action=str(row["action"]),
                entity_type=str(row["entity_type"]),
                entity_id=int(row["entity_id"]),
                responsible=None
                if responsible is None
                else names.get(int(responsible), f"#{responsible}"),
                hours_overdue=float(row["hours_overdue"]),
                escalated=row.get("escalation") in ("queued", "created"),
            )
        )
    return items


@dataclass(frozen=True)
class DigestContent:
    edition: Edition
    lang: str
    week: Figures
    previous: Figures
    comments: Sequence[Comment]
    overdue: Sequence[Overdue]
    overdue_total: int


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return text.replace(".0", "") if text.endswith(".0") else text


def build_digest(
    content: DigestContent,
    digest: Digest,
    *,
    sender: str,
    portal: str,
    tz: ZoneInfo,
) -> EmailMessage:
    """The digest e-mail to `digest.to`, with a Message-ID fixed by the portal and the edition
    (a send tried again carries the same one)."""
    ed = content.edition
    texts = TEXTS[content.lang]
    dates = {"start": ed.start.isoformat(), "end": ed.end.isoformat()}
    context = {
        "t": texts,
        "c": content,
        "week": texts["week"].format(**dates),
        "nps": _number(content.week.nps),
        "previous_nps": _number(content.previous.nps),
        "change": _number(change(content.week, content.previous), signed=True),
        "margin": _number(content.week.margin),
        "more": max(content.overdue_total - len(content.overdue), 0),
        "footer": texts["footer"].format(
            weekday=digest.weekday, time=digest.time.strftime("%H:%M"), tz=tz.key
        ),
    }
    message = EmailMessage()
    message["Subject"] = texts["subject"].format(**dates, nps=context["nps"])
    message["From"] = sender
    message["To"] = ", ".join(digest.to)
    message["Message-ID"] = make_msgid(
        idstring=f"digest.{portal}.{ed.day.isoformat()}", domain="b24-nps"
    )
    message.set_content(_ENV.get_template("digest.txt").render(context))
    message.add_alternative(_ENV.get_template("digest.html").render(context), subtype="html")
    return message
