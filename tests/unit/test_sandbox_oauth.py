"""The sandbox OAuth server's token book: codes, access tokens, refresh rotation, revocation."""

import itertools
from collections.abc import Callable, Iterator

import pytest

from services.sandbox.oauth import OAuthError, OAuthSettings, TokenBook, TokenError

T0 = 1_700_000_000.0
SETTINGS = OAuthSettings(access_ttl_s=3600, refresh_ttl_s=86_400, code_ttl_s=30)


def make(counter: Iterator[int]) -> Callable[[], str]:
    """Token strings t0, t1, … (the real factory is random)."""
    return lambda: f"t{next(counter)}"


@pytest.mark.parametrize(
    ("age", "outcome"),
    [
        (0, "ok"),
        (3599.9, "ok"),
        (3600, "expired_token"),
        (3600 + 86_400, "expired_token"),
    ],
)
def test_an_access_token_lives_its_ttl(age: float, outcome: str) -> None:
    book = TokenBook()
    pair = book.issue(7, T0, SETTINGS, make(itertools.count()))
    if outcome == "ok":
        assert book.check(pair.access_token, T0 + age).user_id == 7
        return
    with pytest.raises(TokenError) as caught:
        book.check(pair.access_token, T0 + age)
    assert caught.value.code == outcome


def test_unknown_and_revoked_tokens_are_invalid() -> None:
    book = TokenBook()
    pair = book.issue(1, T0, SETTINGS, make(itertools.count()))
    with pytest.raises(TokenError) as caught:
        book.check("nope", T0)
    assert caught.value.code == "invalid_token"
    assert book.revoke_all() == 2
    with pytest.raises(TokenError) as caught:
        book.check(pair.access_token, T0)
    assert caught.value.code == "invalid_token"
    with pytest.raises(OAuthError) as refused:
        book.rotate(pair.refresh_token, T0, SETTINGS, make(itertools.count(10)))
    assert refused.value.code == "invalid_grant"


def test_the_answer_carries_expiry_and_user() -> None:
    pair = TokenBook().issue(3, T0, SETTINGS, make(itertools.count()))
    assert (pair.expires, pair.expires_in, pair.user_id) == (int(T0 + 3600), 3600, 3)
    assert pair.access_token != pair.refresh_token


@pytest.mark.parametrize(
    ("steps", "description"),
    [
        ([("exchange", 0)], None),
        ([("exchange", 0), ("exchange", 1)], "The authorization code has already been used"),
        ([("exchange", 30)], "The authorization code has expired"),
        ([("exchange", 29.9)], None),
    ],
)
def test_a_code_is_exchanged_once_within_30_s(
    steps: list[tuple[str, float]], description: str | None
) -> None:
    book = TokenBook()
    counter = itertools.count()
    code = book.authorize(5, T0, SETTINGS, make(counter))
    *first, last = steps
    for _, at in first:
        book.exchange(code, T0 + at, SETTINGS, make(counter))
    if description is None:
        pair = book.exchange(code, T0 + last[1], SETTINGS, make(counter))
        assert book.check(pair.access_token, T0 + last[1]).user_id == 5
        return
    with pytest.raises(OAuthError) as refused:
        book.exchange(code, T0 + last[1], SETTINGS, make(counter))
    assert (refused.value.code, refused.value.description) == ("invalid_grant", description)


def test_refreshing_rotates_the_pair_and_refuses_the_used_refresh_token() -> None:
    book = TokenBook()
    counter = itertools.count()
    first = book.issue(1, T0, SETTINGS, make(counter))
    second = book.rotate(first.refresh_token, T0 + 10, SETTINGS, make(counter))
    assert {second.access_token, second.refresh_token}.isdisjoint(
        {first.access_token, first.refresh_token}
    )
    assert book.check(second.access_token, T0 + 10).user_id == 1
    assert book.check(first.access_token, T0 + 10).user_id == 1  # valid until it expires
    with pytest.raises(OAuthError) as refused:
        book.rotate(first.refresh_token, T0 + 11, SETTINGS, make(counter))
    assert refused.value.description == "The refresh token has already been used"
    third = book.rotate(second.refresh_token, T0 + 12, SETTINGS, make(counter))
    assert book.check(third.access_token, T0 + 12).user_id == 1


@pytest.mark.parametrize(
    ("token", "age", "description"),
    [
        ("given", 86_399, None),
        ("given", 86_400, "The refresh token has expired"),
        ("other", 0, "Invalid refresh token"),
    ],
)
def test_a_refresh_token_lives_its_ttl(token: str, age: float, description: str | None) -> None:
    book = TokenBook()
    counter = itertools.count()
    pair = book.issue(1, T0, SETTINGS, make(counter))
    given = pair.refresh_token if token == "given" else "other"
    if description is None:
        assert book.rotate(given, T0 + age, SETTINGS, make(counter)).user_id == 1
        return
    with pytest.raises(OAuthError) as refused:
        book.rotate(given, T0 + age, SETTINGS, make(counter))
    assert (refused.value.code, refused.value.description) == ("invalid_grant", description)


def test_event_tokens_are_reused_while_half_their_life_is_left() -> None:
    book = TokenBook()
    counter = itertools.count()
    token, left = book.event_token(4, T0, SETTINGS, make(counter))
    assert left == 3600
    assert book.event_token(4, T0 + 1799, SETTINGS, make(counter)) == (token, 1801)
    renewed, left = book.event_token(4, T0 + 1800, SETTINGS, make(counter))
    assert (renewed != token, left) == (True, 3600)
    assert book.event_token(5, T0 + 1800, SETTINGS, make(counter))[0] not in (token, renewed)
    assert book.check(renewed, T0 + 1800).user_id == 4


def test_pruning_keeps_tokens_that_still_read_as_expired() -> None:
    book = TokenBook()
    counter = itertools.count()
    old = book.issue(1, T0, SETTINGS, make(counter))
    book.prune(T0 + 3600 + 86_399)
    assert old.access_token in book.access
    book.prune(T0 + 3600 + 86_401)
    assert old.access_token not in book.access
    assert old.refresh_token not in book.refresh  # its 1 day passed too
    assert book.knows(old.access_token) is False
