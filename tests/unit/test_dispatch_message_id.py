"""A send tried again after a crash carries the same `Message-ID`, fixed by the request and the
send number (docs/dispatch.md, One message per request), so the chaos verdict
(services/harness/dispatch_check.py) and a mail client can tell a second copy for what it is.
Found by the chaos verdict: `email.utils.make_msgid` used to add the time, the process id and a
random number."""

from __future__ import annotations

from services.dispatch.messages import Survey, build_message
from services.harness.dispatch_check import send_key

REQUEST = "0b9cbc1e-5c4b-4ac4-9b0e-8c6f4d2d3f11"


def survey(n: int = 0) -> Survey:
    return Survey(
        request_id=REQUEST,
        n=n,
        lang="en",
        scale="0-10",
        url=f"http://survey.test/s/{REQUEST}",
        optout_url=f"http://survey.test/s/{REQUEST}/optout",
        company="Demo Clinic Supply",
        logo_url=None,
        expires="2027-01-06",
    )


def test_the_message_id_names_the_request_and_the_send() -> None:
    for n in (0, 1):
        message = build_message(survey(n), "nps@example.com", "anna@example.com", None)
        assert send_key(message["Message-ID"]) == (REQUEST, n)


def test_a_send_built_again_after_a_crash_carries_the_same_message_id() -> None:
    first = build_message(survey(), "nps@example.com", "anna@example.com", None)
    again = build_message(survey(), "nps@example.com", "anna@example.com", None)
    assert again["Message-ID"] == first["Message-ID"]
