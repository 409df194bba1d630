"""The sandbox's local inbox served by a real uvicorn with its real SMTP server: messages sent
with smtplib are listed, shown safely and read back as JSON."""

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage

import httpx
import pytest

from services.sandbox.app import LocalInbox, create_app
from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.smtp import DATA_SIZE_LIMIT
from tests.support import serving

SURVEY = "http://127.0.0.1:8091/s/abc123"
OPT_OUT = "http://127.0.0.1:8091/s/abc123/optout"


@asynccontextmanager
async def sandbox(port: int = 0) -> AsyncIterator[tuple[httpx.AsyncClient, LocalInbox]]:
    mail = LocalInbox(host="127.0.0.1", port=port)
    app = create_app(SandboxPortal(limits=Limits.off()), mail=mail)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client, mail


def survey_message(to: str = "alina.belov12@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Demo Clinic <nps@example.com>"
    message["To"] = to
    message["Subject"] = "Как вам Laser A? <2 minutes>"
    message["Message-ID"] = "<req-1.0@b24-nps>"
    message["List-Unsubscribe"] = f"<{OPT_OUT}>"
    message.set_content(f"Rate us: {SURVEY}.\nNo more surveys: {OPT_OUT}\n")
    message.add_alternative(
        f'<p style="color:#333">Rate us: <a href="{SURVEY}">open the survey</a></p>'
        '<script>alert("x")</script><a href="javascript:alert(1)">bad</a>'
        f'<a href="{OPT_OUT}">unsubscribe</a>',
        subtype="html",
    )
    return message


def send(port: int, message: EmailMessage, *, login: bool = False) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if login:
            client.login("dispatch", "any-password")
        client.send_message(message)


async def test_a_sent_message_is_listed_shown_safely_and_read_back_as_json() -> None:
    async with sandbox() as (client, _):
        info = (await client.get("/sandbox/info")).json()["inbox"]
        assert info["listening"] is True
        port = info["smtp_port"]
        await asyncio.to_thread(send, port, survey_message())
        await asyncio.to_thread(send, port, survey_message("vera.titov7@example.org"), login=True)
        listed = (await client.get("/inbox.json")).json()
        page = await client.get("/inbox")
        shown = await client.get("/inbox/1")
        framed = await client.get("/inbox/1/html")
        only_vera = (await client.get("/inbox.json", params={"to": "VERA.titov"})).json()
    assert listed["received"] == 2
    first = listed["messages"][0]
    assert (first["number"], first["to"], first["subject"]) == (
        1,
        "alina.belov12@example.com",
        "Как вам Laser A? <2 minutes>",
    )
    assert first["envelope_to"] == ["alina.belov12@example.com"]
    assert first["message_id"] == "<req-1.0@b24-nps>"
    assert first["links"] == [SURVEY, OPT_OUT]
    assert first["text"] == f"Rate us: {SURVEY}.\nNo more surveys: {OPT_OUT}\n"
    assert '<a href="javascript:alert(1)">' in first["html"]
    assert ["List-Unsubscribe", f"<{OPT_OUT}>"] in first["headers"]
    assert [m["to"] for m in only_vera["messages"]] == ["vera.titov7@example.org"]

    assert page.status_code == 200
    assert "Как вам Laser A? &lt;2 minutes&gt;" in page.text
    assert '<a href="/inbox/2">' in page.text
    assert page.headers["content-security-policy"] == "default-src 'none'"

    assert f'<a href="{SURVEY}" target="_blank" rel="noopener noreferrer">' in shown.text
    assert "javascript:" not in shown.text
    assert "<script>" not in shown.text
    assert '<iframe sandbox="allow-popups allow-popups-to-escape-sandbox" src="/inbox/1/html"' in (
        shown.text
    )
    assert "frame-src 'self'" in shown.headers["content-security-policy"]
    policy = framed.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "sandbox allow-popups allow-popups-to-escape-sandbox" in policy
    assert "script-src" not in policy
    assert framed.text.startswith('<base target="_blank">')


async def test_an_oversized_message_is_refused_and_not_kept() -> None:
    async with sandbox() as (client, mail):
        await asyncio.to_thread(send, mail.port, survey_message())
        huge = EmailMessage()
        huge["To"] = "big@example.com"
        huge.set_content(("x" * 70 + "\n") * (DATA_SIZE_LIMIT // 70 + 10))
        with pytest.raises(smtplib.SMTPException) as refused:
            await asyncio.to_thread(send, mail.port, huge)
        listed = (await client.get("/inbox.json")).json()
    assert "552" in str(refused.value)
    assert [m["number"] for m in listed["messages"]] == [1]


async def test_older_messages_make_way_and_are_gone_from_their_page() -> None:
    mail = LocalInbox(host="127.0.0.1", port=0)
    mail.inbox = type(mail.inbox)(capacity=2)
    app = create_app(SandboxPortal(limits=Limits.off()), mail=mail)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        for number in range(3):
            await asyncio.to_thread(send, mail.port, survey_message(f"c{number}@example.com"))
        listed = (await client.get("/inbox.json")).json()
        gone = await client.get("/inbox/1")
        kept = await client.get("/inbox/3")
    assert listed["received"] == 3
    assert [(m["number"], m["to"]) for m in listed["messages"]] == [
        (2, "c1@example.com"),
        (3, "c2@example.com"),
    ]
    assert (gone.status_code, kept.status_code) == (404, 200)


async def test_a_taken_port_leaves_the_portal_running_without_an_inbox() -> None:
    async with sandbox() as (_, first):
        async with sandbox(first.port) as (client, second):
            info = (await client.get("/sandbox/info")).json()
            page = await client.get("/inbox")
        assert first.listening
    assert info["webhook_url"].endswith("/rest/1/" + info["webhook_url"].split("/")[-2] + "/")
    assert info["inbox"]["listening"] is False
    assert f"cannot listen on 127.0.0.1:{first.port}" in info["inbox"]["error"]
    assert not second.listening
    assert "no SMTP server (cannot listen on" in page.text
