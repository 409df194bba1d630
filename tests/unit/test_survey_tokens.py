"""Survey link tokens: signing, expiry, key rotation, tampering; and the request's subject."""

from __future__ import annotations

import uuid

import pytest

from services.survey.requests import RequestError, new_request
from services.survey.tokens import LinkSigner
from shared.portal_config import PortalConfig

REQUEST = uuid.UUID("5b1f8c3e-0a6d-4c39-9f6e-2d7a4b8e1c90")
DAY = 86400
T0 = 1_800_000_000.0


def signer(keys: list[str], now: float = T0, max_age_s: int = 30 * DAY) -> LinkSigner:
    return LinkSigner(keys, max_age_s, clock=lambda: now)


@pytest.mark.parametrize(
    ("sign_keys", "check_keys", "age_s", "expected"),
    [
        (["k1"], ["k1"], 0, "valid"),
        (["k1"], ["k1"], 30 * DAY, "valid"),
        (["k1"], ["k1"], 30 * DAY + 1, "expired"),
        (["k1"], ["k2"], 0, "invalid"),
        # rotation: the new key signs, links signed with the old one still verify
        (["k1"], ["k2", "k1"], 5 * DAY, "valid"),
        (["k2", "k1"], ["k2"], 0, "valid"),
        (["k2", "k1"], ["k1"], 0, "invalid"),
        # the old key dropped: its links stop working
        (["k1"], ["k3", "k2"], 0, "invalid"),
    ],
)
def test_signing_expiry_and_rotation(
    sign_keys: list[str], check_keys: list[str], age_s: int, expected: str
) -> None:
    token = signer(sign_keys).sign(REQUEST)
    check = signer(check_keys, now=T0 + age_s).check(token)
    assert check.status == expected
    assert check.request_id == (REQUEST if expected == "valid" else None)


def _flip(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("A" if char != "A" else "B") + token[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: _flip(t, 2),  # the payload
        lambda t: _flip(t, len(t) - 3),  # the signature
        lambda t: _flip(t, t.index(".") + 2),  # the timestamp
        lambda t: t + "x",
        lambda t: t[:-1],
        lambda t: t.replace(".", "", 1),
        lambda _t: "",
        lambda _t: "not-a-token",
        lambda t: t * 10,
    ],
)
def test_a_tampered_token_is_invalid(tamper: object) -> None:
    token = signer(["k1"]).sign(REQUEST)
    assert callable(tamper)
    assert signer(["k1"]).check(tamper(token)).status == "invalid"


def test_the_token_carries_no_personal_data_and_differs_per_request() -> None:
    one, two = signer(["k1"]).sign(REQUEST), signer(["k1"]).sign(uuid.uuid4())
    assert one != two
    assert "@" not in one
    assert len(one) < 100


@pytest.mark.parametrize(
    ("issued", "presented", "nonce", "valid"),
    [
        (REQUEST, REQUEST, "n1", True),
        (REQUEST, REQUEST, "n2", False),  # another browser's cookie
        (REQUEST, uuid.uuid4(), "n1", False),  # another request's form
    ],
)
def test_form_tokens_bind_request_and_cookie(
    issued: uuid.UUID, presented: uuid.UUID, nonce: str, valid: bool
) -> None:
    link = signer(["k1"])
    assert link.form_token_valid(link.form_token(issued, "n1"), presented, nonce) is valid
    assert not link.form_token_valid("garbage", issued, "n1")


@pytest.mark.parametrize(
    ("segment", "product", "lang", "category", "sku"),
    [
        ("12", None, "ru", 12, "EQ-LASER-A"),
        ("laser a", "EQ-LASER-A", "en", 12, "EQ-LASER-A"),
        ("Cosmetics", None, "en", 10, None),
        ("14", None, "ru", 14, "EQ-CRYO-B"),
    ],
)
def test_new_request_resolves_the_segment(
    portal_config: PortalConfig,
    segment: str,
    product: str | None,
    lang: str,
    category: int,
    sku: str | None,
) -> None:
    request = new_request(
        portal_config, contact_id=7, segment=segment, product=product, lang=lang, portal="p"
    )
    assert (request.category_id, request.sku, request.lang) == (category, sku, lang)


@pytest.mark.parametrize(
    ("contact", "segment", "product", "lang", "message"),
    [
        (7, "99", None, "ru", "segment '99' is not in survey.segments; known: 10 (Cosmetics)"),
        (7, "12", "EQ-CRYO-B", "ru", "--product EQ-CRYO-B is not it"),
        (7, "10", "COS-SERUM", "ru", "cosmetics segment"),
        (7, "12", None, "de", "language 'de' is not offered"),
        (0, "12", None, "ru", "contact 0 is not a contact id"),
    ],
)
def test_new_request_names_what_is_wrong(
    portal_config: PortalConfig,
    contact: int,
    segment: str,
    product: str | None,
    lang: str,
    message: str,
) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        new_request(
            portal_config,
            contact_id=contact,
            segment=segment,
            product=product,
            lang=lang,
            portal="p",
        )
