"""The local inbox: messages parsed for reading, links found, the oldest making way."""

import pytest

from services.sandbox.inbox import Inbox, parse_message
from services.sandbox.inbox_pages import html_part, inbox_page, message_page


def raw(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


PLAIN = raw(
    "From: nps@example.com",
    "To: =?utf-8?b?0JDQu9C40L3QsA==?= <alina@example.com>",
    "Subject: =?utf-8?q?=D0=9E=D1=86=D0=B5=D0=BD=D0=B8=D1=82=D0=B5?= Laser A",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "Survey: https://survey.example.org/s/a1b2, or (https://survey.example.org/s/x).",
    "Again: https://survey.example.org/s/a1b2",
)


def test_headers_are_decoded_and_the_text_part_read() -> None:
    message = parse_message(1, "nps@example.com", ["alina@example.com"], PLAIN, 10.0)
    assert (message.sender, message.to, message.subject) == (
        "nps@example.com",
        "Алина <alina@example.com>",
        "Оцените Laser A",
    )
    assert message.html is None
    assert message.text is not None
    assert message.text.startswith("Survey: https://survey.example.org/s/a1b2, or (")
    assert message.links == ("https://survey.example.org/s/a1b2", "https://survey.example.org/s/x")
    assert message.size == len(PLAIN)


def test_a_broken_charset_is_read_as_utf8_with_replacements() -> None:
    content = (
        raw(
            "To: c@example.com",
            "Subject: odd",
            "Content-Type: text/plain; charset=no-such-charset",
            "Content-Transfer-Encoding: 8bit",
            "",
            "",
        )
        + "Привет http://a.example.com/1".encode()
    )
    message = parse_message(1, "", ["c@example.com"], content, 0.0)
    assert message.text is not None
    assert message.text.endswith("http://a.example.com/1")
    assert message.links == ("http://a.example.com/1",)


@pytest.mark.parametrize(
    ("html", "links"),
    [
        ('<a href="https://s.example.org/1">go</a>', ("https://s.example.org/1",)),
        ('<a href="javascript:alert(1)">x</a><a href="mailto:a@b.c">m</a>', ()),
        ("<a>no href</a><A HREF=' http://s.example.org/2 '>y</A>", ("http://s.example.org/2",)),
    ],
)
def test_only_web_addresses_count_as_links(html: str, links: tuple[str, ...]) -> None:
    content = raw("To: c@example.com", "Content-Type: text/html; charset=utf-8", "", html)
    assert parse_message(1, "", [], content, 0.0).links == links


def test_the_oldest_messages_make_way_and_numbers_are_never_reused() -> None:
    inbox = Inbox(capacity=2)
    for number in range(3):
        inbox.deliver("a@example.com", [f"c{number}@example.com"], PLAIN, float(number))
    assert [m.number for m in inbox.messages()] == [2, 3]
    assert inbox.received == 3
    assert inbox.get(1) is None
    assert inbox.get(3) is not None


def test_pages_escape_everything_the_message_says() -> None:
    content = raw(
        "From: <script>@example.com",
        "To: c@example.com",
        "Subject: <b>bold</b>",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<a href="https://s.example.org/?a=1&b=<2>">x</a><img src=x onerror=alert(1)>',
    )
    message = parse_message(7, "", ["c@example.com"], content, 0.0)
    listing = inbox_page([message], received=1, smtp="SMTP on 127.0.0.1:8025")
    assert "&lt;b&gt;bold&lt;/b&gt;" in listing
    assert "<script>" not in listing
    shown = message_page(message)
    assert 'href="https://s.example.org/?a=1&amp;b=&lt;2&gt;"' in shown
    assert "onerror" not in shown
    assert html_part(message).startswith('<base target="_blank"><a href=')
