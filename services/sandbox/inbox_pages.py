"""The local inbox's pages: the list of messages, one message (its text, its links, its HTML
part in a sandboxed frame), and the HTML part itself, served under a policy that lets it show
its own styles and nothing else: no scripts, no requests, links opening in a new tab."""

from datetime import datetime
from html import escape

from services.sandbox.inbox import InboxMessage
from services.sandbox.timing import PORTAL_TZ

LIST_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}
MESSAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-src 'self'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
}
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
HTML_PART_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
        f" frame-ancestors 'self'; sandbox {FRAME_SANDBOX}"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
REFRESH_S = 5


def _when(received: float) -> str:
    return datetime.fromtimestamp(received, PORTAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _document(title: str, body: str, *, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8>{meta}"
        f"<title>{escape(title)} · sandbox inbox</title>{body}</html>"
    )


def inbox_page(messages: list[InboxMessage], *, received: int, smtp: str) -> str:
    """Newest first: time, from, to, subject, each subject a link to the message."""
    rows = "".join(
        f"<tr><td>{m.number}</td><td>{escape(_when(m.received))}</td>"
        f"<td>{escape(m.sender)}</td><td>{escape(m.to)}</td>"
        f'<td><a href="/inbox/{m.number}">{escape(m.subject or "(no subject)")}</a></td></tr>'
        for m in reversed(messages)
    )
    kept = f"{len(messages)} kept of {received} received." if received else "No messages yet."
    return _document(
        "Inbox",
        f"<h1>Inbox</h1><p>{escape(smtp)}. {escape(kept)} As JSON: /inbox.json. "
        f"This page reloads every {REFRESH_S} s.</p>"
        "<table><tr><th>#</th><th>Received</th><th>From</th><th>To</th><th>Subject</th></tr>"
        f"{rows}</table>",
        refresh=True,
    )


def message_page(message: InboxMessage) -> str:
    """The message's headers, its links (each clickable, opening in a new tab), the HTML part
    in a frame that runs no script, and the text part."""
    shown = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Unsubscribe")
    headers = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>"
        for name, value in message.headers
        if name.title() in {item.title() for item in shown}
    )
    links = "".join(
        f'<li><a href="{escape(link)}" target="_blank" rel="noopener noreferrer">'
        f"{escape(link)}</a></li>"
        for link in message.links
    )
    html_part = (
        f'<h2>HTML part</h2><iframe sandbox="{FRAME_SANDBOX}" src="/inbox/{message.number}/html"'
        ' title="The HTML part of the message" style="width:100%;height:32em;border:1px solid"'
        "></iframe>"
        if message.html is not None
        else "<h2>HTML part</h2><p>None.</p>"
    )
    text_part = (
        f"<h2>Text part</h2><pre>{escape(message.text)}</pre>"
        if message.text is not None
        else "<h2>Text part</h2><p>None.</p>"
    )
    return _document(
        message.subject or f"Message {message.number}",
        f'<p><a href="/inbox">← Inbox</a></p><h1>{escape(message.subject or "(no subject)")}</h1>'
        f"<table>{headers}</table>"
        f"<h2>Links</h2>{f'<ul>{links}</ul>' if links else '<p>None.</p>'}"
        f"{html_part}{text_part}",
    )


def html_part(message: InboxMessage) -> str:
    """The HTML part as sent, its links made to open in a new tab."""
    return '<base target="_blank">' + (message.html or "")


def missing_page(number: int) -> str:
    return _document(
        "No such message",
        f'<p><a href="/inbox">← Inbox</a></p><h1>No message {number}</h1>'
        "<p>The inbox keeps only the latest messages, in memory.</p>",
    )
