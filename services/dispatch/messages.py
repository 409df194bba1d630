"""The survey e-mail (pure: no I/O beyond the package's templates): subject, text and HTML from
Jinja2 templates per language, the scale as one-click links, the company's name and logo, the
opt-out link (docs/dispatch.md, E-mail)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from shared.events import Scale

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "How likely are you to recommend {company}?",
        "reminder_subject": "Reminder: how likely are you to recommend {company}?",
        "greeting": "Hello{name}!",
        "question": "How likely are you to recommend {company} to a friend or colleague?",
        "click": "Click a number to answer (0 = not at all likely, 10 = extremely likely):",
        "binary": "Are you satisfied?",
        "satisfied": "Satisfied",
        "unsatisfied": "Not satisfied",
        "open": "Or open the survey",
        "expires": "The link works until {date}.",
        "optout": "Do not want these surveys? Unsubscribe",
        "thanks": "Thank you!",
    },
    "ru": {
        "subject": "Порекомендуете ли вы {company}?",
        "reminder_subject": "Напоминание: порекомендуете ли вы {company}?",
        "greeting": "Здравствуйте{name}!",
        "question": "Насколько вероятно, что вы порекомендуете {company} другу или коллеге?",
        "click": "Нажмите на число, чтобы ответить (0 — точно нет, 10 — точно да):",
        "binary": "Вы довольны?",
        "satisfied": "Доволен",
        "unsatisfied": "Не доволен",
        "open": "Или откройте опрос",
        "expires": "Ссылка действует до {date}.",
        "optout": "Не хотите получать такие опросы? Отписаться",
        "thanks": "Спасибо!",
    },
}
_ENV = Environment(
    loader=PackageLoader("services.dispatch", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Survey:
    """What one message says and where its links lead."""

    request_id: str
    n: int
    """0: the first message; n: the n-th reminder."""
    lang: str
    scale: Scale
    url: str
    optout_url: str
    company: str
    logo_url: str | None
    expires: str
    """The link's last day, as the customer reads it."""
    name: str | None = None


def _scale(scale: Scale, texts: dict[str, str]) -> list[tuple[str, int]]:
    if scale == "binary":
        return [(texts["unsatisfied"], 0), (texts["satisfied"], 1)]
    low = 1 if scale == "1-10" else 0
    return [(str(score), score) for score in range(low, 11)]


def build_message(survey: Survey, sender: str, to: str, reply_to: str | None) -> EmailMessage:
    """The message, with a Message-ID fixed by the request and the send number (a send tried
    again after a crash carries the same one)."""
    texts = {
        key: value.format(company=survey.company, date=survey.expires, name="")
        for key, value in TEXTS[survey.lang].items()
    }
    texts["greeting"] = TEXTS[survey.lang]["greeting"].format(
        name=f", {survey.name}" if survey.name else ""
    )
    context = {
        "t": texts,
        "survey": survey,
        "scale": [
            (label, f"{survey.url}?score={score}") for label, score in _scale(survey.scale, texts)
        ],
        "binary": survey.scale == "binary",
    }
    message = EmailMessage()
    message["Subject"] = texts["reminder_subject" if survey.n else "subject"]
    message["From"] = sender
    message["To"] = to
    if reply_to:
        message["Reply-To"] = reply_to
    message["Message-ID"] = f"<{survey.request_id}.{survey.n}@b24-nps>"
    message["List-Unsubscribe"] = f"<{survey.optout_url}>"
    message.set_content(_ENV.get_template("survey.txt").render(context))
    message.add_alternative(_ENV.get_template("survey.html").render(context), subtype="html")
    return message
