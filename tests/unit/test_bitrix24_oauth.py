"""The pure side of the application's tokens: the OAuth server's answers, its refusals, expiry."""

from typing import Any

import pytest

from shared.bitrix24.oauth import (
    AnswerError,
    Refusal,
    TokenPair,
    expired,
    expiry,
    parse_token_answer,
    refusal,
)

T0 = 1_700_000_000.0
ANSWER = {
    "access_token": "a-token",
    "refresh_token": "r-token",
    "expires": 1_700_099_999,
    "expires_in": 3600,
    "scope": "crm,user",
    "domain": "oauth.bitrix.info",
    "server_endpoint": "https://oauth.bitrix.info/rest/",
    "status": "L",
    "client_endpoint": "https://acme.bitrix24.com/rest",
    "member_id": "m-1",
    "user_id": 1,
}


def test_a_token_answer_becomes_a_pair_expiring_from_now() -> None:
    pair = parse_token_answer(ANSWER, T0)
    assert pair == TokenPair(
        access_token="a-token",
        refresh_token="r-token",
        expires_at=T0 + 3600,
        member_id="m-1",
        client_endpoint="https://acme.bitrix24.com/rest/",
        scope="crm,user",
    )
    assert "a-token" not in repr(pair)
    assert "r-token" not in repr(pair)


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"access_token": ""}, "access_token", "a non-empty string"),
        ({"refresh_token": None}, "refresh_token", "a non-empty string"),
        ({"member_id": 5}, "member_id", "a non-empty string"),
        ({"client_endpoint": "acme.bitrix24.com/rest/"}, "client_endpoint", "an http(s) URL"),
        ({"expires_in": "soon"}, "expires_in", "a number of seconds"),
        ({"expires_in": True}, "expires_in", "a number of seconds"),
        ({"expires_in": 0}, "expires_in", "a positive number of seconds"),
        ({"expires_in": None}, "expires_in", "a number of seconds"),
    ],
)
def test_what_a_token_answer_must_hold(change: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(AnswerError) as caught:
        parse_token_answer({**ANSWER, **change}, T0)
    assert (caught.value.field, caught.value.expected) == (field, expected)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("value", "at"),
    [(3600, T0 + 3600), ("3600", T0 + 3600), (1.5, T0 + 1.5)],
)
def test_expiry_counts_seconds_from_now(value: Any, at: float) -> None:
    assert expiry(value, T0) == at


@pytest.mark.parametrize(
    ("status", "code", "meaning"),
    [
        (400, "invalid_grant", Refusal.REVOKED),
        (400, "INVALID_GRANT", Refusal.REVOKED),
        (401, "invalid_client", Refusal.CLIENT),
        (402, "PAYMENT_REQUIRED", Refusal.PAYMENT),
        (402, "", Refusal.PAYMENT),
        (500, "", Refusal.TRANSIENT),
        (503, "whatever", Refusal.TRANSIENT),
        (429, "slow_down", Refusal.TRANSIENT),
        (400, "", Refusal.OTHER),
        (400, "invalid_request", Refusal.OTHER),
        (400, "invalid_scope", Refusal.OTHER),
    ],
)
def test_what_a_refusal_means(status: int, code: str, meaning: Refusal) -> None:
    assert refusal(status, code) is meaning


@pytest.mark.parametrize(
    ("now", "dead"),
    [(T0, False), (T0 + 3599.9, False), (T0 + 3600, True), (T0 + 9999, True)],
)
def test_when_an_access_token_is_expired(now: float, dead: bool) -> None:
    assert expired(T0 + 3600, now) is dead
