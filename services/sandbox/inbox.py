"""The local inbox: every message the sandbox's SMTP server accepted, parsed for reading (the
subject, the text and HTML parts, the links in them), in memory and bounded (the oldest go
first). Pure: the SMTP server (``smtp.py``) hands it the bytes."""

import email
import email.policy
import re
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Any

CAPACITY = 1000
_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class InboxMessage:
    """One accepted message: ``number`` counts from 1 and is never reused."""

    number: int
    received: float
    envelope_from: str
    envelope_to: tuple[str, ...]
    sender: str
    to: str
    subject: str
    message_id: str | None
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    links: tuple[str, ...]
    size: int

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "received": self.received,
            "from": self.sender,
            "to": self.to,
            "subject": self.subject,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "envelope_from": self.envelope_from,
            "envelope_to": list(self.envelope_to),
            "message_id": self.message_id,
            "headers": [list(header) for header in self.headers],
            "text": self.text,
            "html": self.html,
            "links": list(self.links),
            "size": self.size,
        }


class Inbox:
    """The last ``capacity`` messages, newest last."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._messages: deque[InboxMessage] = deque(maxlen=capacity)
        self._count = 0

    def deliver(
        self, envelope_from: str, envelope_to: list[str], content: bytes, received: float
    ) -> InboxMessage:
        self._count += 1
        message = parse_message(self._count, envelope_from, envelope_to, content, received)
        self._messages.append(message)
        return message

    def messages(self) -> list[InboxMessage]:
        return list(self._messages)

    def get(self, number: int) -> InboxMessage | None:
        return next((m for m in self._messages if m.number == number), None)

    @property
    def received(self) -> int:
        """Messages accepted since the start, the evicted ones included."""
        return self._count


def parse_message(
    number: int, envelope_from: str, envelope_to: list[str], content: bytes, received: float
) -> InboxMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    text = _part(parsed, "plain")
    html = _part(parsed, "html")
    return InboxMessage(
        number=number,
        received=received,
        envelope_from=envelope_from,
        envelope_to=tuple(envelope_to),
        sender=_header(parsed, "From"),
        to=_header(parsed, "To") or ", ".join(envelope_to),
        subject=_header(parsed, "Subject"),
        message_id=_header(parsed, "Message-ID") or None,
        headers=tuple((name, _decoded(value)) for name, value in parsed.items()),
        text=text,
        html=html,
        links=tuple(dict.fromkeys([*_html_links(html or ""), *_text_links(text or "")])),
        size=len(content),
    )


def _part(message: Message, subtype: str) -> str | None:
    if not isinstance(message, EmailMessage):
        return None
    body = message.get_body(preferencelist=(subtype,))
    if body is None or body.get_content_subtype() != subtype:
        return None
    try:
        content = body.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        raw = body.get_payload(decode=True)
        content = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else None
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return "" if value is None else _decoded(value)


def _decoded(value: Any) -> str:
    return " ".join(str(value).split())


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value.strip() for name, value in attrs if name == "href" and value)


def _html_links(html: str) -> list[str]:
    """The ``href`` of every anchor that is a web address (nothing else is shown as a link)."""
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    return [href for href in parser.hrefs if href.lower().startswith(("http://", "https://"))]


def _text_links(text: str) -> list[str]:
    return [match.group(0).rstrip(_TRAILING) for match in _URL.finditer(text)]
