"""Bad input at the edge (issue 7, point 3): the webhook endpoints fuzzed with hypothesis.

The ingest app runs in-process (`httpx.ASGITransport`) on the session's real PostgreSQL. Each
generated request must get:

- an answer below 500;
- for a refusal (4xx), a JSON body naming the problem: `error`, plus the documented `field`;
- nothing stored in `ingest_events` and nothing queued in the outbox when the input is invalid,
  forged or ignored. The ids of both tables are compared before and after each request: the
  tests run one request at a time on a database of their own, so any new row is the request's.

The strategies build a valid request first (random order, letter case, percent-encoding style,
repeated keys, nested and huge extra keys, tokens of a rotation…) and then break it in exactly one
way, with the answer that break must get. The unbroken request is then sent as a positive
control: it must be accepted and stored and queued exactly once. A run therefore cannot pass by
refusing everything, and each refusal is shown to come from the one thing that was broken.
"""

from __future__ import annotations

import contextlib
import json
import re
import string
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import asyncpg
import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.api import EVENT_PATH, ROBOT_PATH, create_app
from services.ingest.webhook import (
    DEAL_EVENTS,
    MAX_BODY_BYTES,
    MAX_KEY_DEPTH,
    MAX_PARAMETERS,
    MEMBER_FIELD,
    TOKEN_FIELD,
    UPDATE_EVENTS,
)
from shared.outbox import Outbox
from shared.portal_config import PortalConfig, load_portal_config
from shared.settings import Settings
from tests.support import forget_served_portal

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "portal.example.yaml"
CONFIG = load_portal_config(CONFIG_PATH)
NPS_TYPE = CONFIG.survey.entity_type_id
TOKENS = ("jvh9y1ulvt2m6k5or90v9mg8nn32ozas", "rotated-Token-2")
FORM_TYPE = "application/x-www-form-urlencoded"
BIGINT = 2**63 - 1
"""The largest id or Unix time PostgreSQL's `bigint` holds; anything larger is bad input."""
ITEM_EVENTS = ("ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE")
MEMBER_PREFIX = "ingest-fuzz-"
"""Every generated portal's member id starts so: what the run stored is removed after it."""
RAW_QUERY = "x-fuzz-raw-query"
URL_SAFE = frozenset((string.ascii_letters + string.digits + "-._~%&=+[]").encode())
"""Query bytes httpx sends as they are; any other query goes through `RawQuery`."""


def fuzz(examples: int) -> hypothesis.settings:
    """`examples` passing examples of a run, each one or two requests: about 2,700 requests for
    the module, in some 25 s on two cores."""
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------------------------------------
# The app, its database and the checks made on every answer


@pytest.fixture(scope="module", autouse=True)
async def forget_the_run(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Remove the run's thousands of events afterwards (later tests of the session run the relay
    over the whole outbox) and the portal the last example taught ingest."""
    yield
    await forget_served_portal(pool)
    like = f"{MEMBER_PREFIX}%"
    await pool.execute(
        "DELETE FROM outbox WHERE routing_key = 'webhook.received'"
        " AND body->'portal'->>'member_id' LIKE $1",
        like,
    )
    await pool.execute("DELETE FROM ingest_events WHERE member_id LIKE $1", like)


@pytest.fixture(scope="module")
def fuzz_settings(pg_dsn: str, amqp_url: str) -> Settings:
    return Settings(
        rabbitmq_url=amqp_url,
        database_url=pg_dsn,
        nps_config=CONFIG_PATH,
        bitrix24_webhook_url=None,
        bitrix24_app_token=SecretStr(", ".join(TOKENS)),
        _env_file=None,
    )


class RawQuery:
    """Hands the app the query string sent hex-encoded in a header: httpx sends only ASCII URLs,
    while a server passes on whatever bytes the request line held."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(RAW_QUERY.encode())
            if raw is not None:
                scope = {**scope, "query_string": bytes.fromhex(raw.decode())}
        await self.app(scope, receive, send)


def client_for(settings: Settings, config: PortalConfig, pool: asyncpg.Pool) -> httpx.AsyncClient:
    app = RawQuery(create_app(settings, config, pool, Outbox()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


@pytest.fixture(scope="module")
async def ingest(fuzz_settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """The app as shipped by default: no `portal.member_id`, the first portal is kept."""
    async with client_for(fuzz_settings, CONFIG, pool) as client:
        yield client


@contextlib.asynccontextmanager
async def new_deployment(
    settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """The app as shipped by default (no `portal.member_id`: the first portal is kept), as a
    new deployment that has not learned its portal yet: each example gets one."""
    await forget_served_portal(pool)
    async with client_for(settings, CONFIG, pool) as client:
        yield client


def locked_to(member_id: str) -> PortalConfig:
    return CONFIG.model_copy(
        update={"portal": CONFIG.portal.model_copy(update={"member_id": member_id})}
    )


@dataclass(frozen=True)
class Marks:
    """The highest row ids of `ingest_events` and `outbox`: what a request may have added."""

    events: int
    outbox: int


async def marks(pool: asyncpg.Pool) -> Marks:
    row = await pool.fetchrow(
        "SELECT (SELECT coalesce(max(id), 0) FROM ingest_events) AS events,"
        " (SELECT coalesce(max(id), 0) FROM outbox) AS outbox"
    )
    assert row is not None
    return Marks(row["events"], row["outbox"])


@dataclass(frozen=True)
class Expect:
    """The answer a request must get: a refusal naming `field`, or (200) being ignored."""

    status: int
    field: str | None = None


IGNORED = Expect(200)


@dataclass(frozen=True)
class Stored:
    """What a valid request must store: one `ingest_events` row and one queued message."""

    member: str
    source: str
    event: str
    item_id: int
    ts: int | None


@dataclass(frozen=True)
class Case:
    """One request as sent. `query` goes to the robot endpoint; `chunked` streams the body
    without a Content-Length."""

    kind: str
    body: bytes
    headers: Mapping[str, str]
    query: bytes = b""
    chunked: bool = False


async def post(client: httpx.AsyncClient, path: str, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    url = httpx.URL(f"http://ingest{path}")
    if all(byte in URL_SAFE for byte in case.query):
        url = url.copy_with(raw_path=f"{path}?{case.query.decode()}".encode())
    else:
        headers[RAW_QUERY] = case.query.hex()
    if case.chunked:
        return await client.post(url, content=_chunks(case.body), headers=headers)
    return await client.post(url, content=case.body, headers=headers)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 16_384):
        yield body[start : start + 16_384]


def answered(response: httpx.Response) -> dict[str, Any]:
    """Every answer: below 500 and a JSON object; a refusal names what is wrong."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    body = response.json()
    assert isinstance(body, dict), body
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str), body
        assert body["error"], body
        assert "field" in body, body
        assert isinstance(body.get("expected"), str), body
        assert body["expected"], body
    return body


async def refused_and_nothing_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, path: str, case: Case, expect: Expect
) -> None:
    hypothesis.event(f"{path} {case.kind}: {expect.status}")
    before = await marks(pool)
    response = await post(client, path, case)
    body = answered(response)
    assert response.status_code == expect.status, (case.kind, response.status_code, body)
    if expect.status == 200:
        assert body["status"] == "ignored", (case.kind, body)
        assert body["reason"], body
    else:
        assert body["field"] == expect.field, (case.kind, body)
    assert await marks(pool) == before, f"{case.kind}: stored or queued something"


async def accepted_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, path: str, case: Case, stored: Stored
) -> None:
    """Send a valid request: 200 accepted, one stored event (without tokens), one queued
    `webhook.received` with the same event id."""
    before = await marks(pool)
    response = await post(client, path, case)
    body = answered(response)
    assert response.status_code == 200, (case.kind, body)
    assert body["status"] == "accepted", (case.kind, body)
    rows = await pool.fetch(
        "SELECT event_id, member_id, source, event, item_id, ts, payload::text AS payload"
        " FROM ingest_events WHERE id > $1",
        before.events,
    )
    assert [
        (str(r["event_id"]), r["member_id"], r["source"], r["event"], r["item_id"], r["ts"])
        for r in rows
    ] == [(body["event_id"], stored.member, stored.source, stored.event, stored.item_id, stored.ts)]
    assert not any(token in rows[0]["payload"] for token in TOKENS), "a token was stored"
    queued = await pool.fetch(
        "SELECT routing_key, body::text AS body FROM outbox WHERE id > $1", before.outbox
    )
    assert [row["routing_key"] for row in queued] == ["webhook.received"]
    message = json.loads(queued[0]["body"])
    assert message["event_id"] == body["event_id"]
    assert (message["portal"]["member_id"], message["item_id"]) == (stored.member, stored.item_id)
    assert not any(token in queued[0]["body"] for token in TOKENS), "a token was queued"


async def replayed(
    client: httpx.AsyncClient, pool: asyncpg.Pool, path: str, case: Case, stored: Stored
) -> None:
    """The same request again: with a time (`ts`, `updated_time`) it is a duplicate and stores
    nothing; without one it cannot be told from a new call, and is stored once more."""
    if stored.ts is None:
        await accepted_once(client, pool, path, case, stored)
        return
    before = await marks(pool)
    body = answered(await post(client, path, case))
    assert body == {"status": "duplicate"}, body
    assert await marks(pool) == before


# ------------------------------------------------------------------------------------------------
# Forms: pairs, their encoding, and small strategies shared by both endpoints


@dataclass(frozen=True)
class Encoding:
    """How a form is written: spaces as `+` or `%20`, brackets escaped or not, non-ASCII as
    percent-escapes or as raw UTF-8 bytes (all of which a form decoder must read alike)."""

    plus_spaces: bool
    raw_brackets: bool
    raw_unicode: bool

    def text(self, text: str) -> str:
        safe = "[]" if self.raw_brackets else ""
        escape = quote_plus if self.plus_spaces else quote
        if not self.raw_unicode:
            return escape(text, safe=safe)
        return re.sub(r"[\x00-\x7f]+", lambda run: escape(run.group(), safe=safe), text)

    def form(self, pairs: Iterable[tuple[str, str]]) -> str:
        return "&".join(f"{self.text(key)}={self.text(value)}" for key, value in pairs)


Pairs = tuple[tuple[str, str], ...]


def top(key: str) -> str:
    return key.split("[", 1)[0]


def without(pairs: Pairs, *keys: str) -> Pairs:
    return tuple(pair for pair in pairs if pair[0] not in keys)


def setting(pairs: Pairs, key: str, value: str | None) -> Pairs:
    """`key` set to `value` (None: removed), wherever and however often it was before."""
    rest = without(pairs, key)
    return rest if value is None else (*rest, (key, value))


def amps_to(text: str, fields: int) -> str:
    """Empty `&` separators so that the form counts exactly `fields` parameters."""
    return "&" * max(0, fields - 1 - text.count("&"))


encodings = st.builds(Encoding, st.booleans(), st.booleans(), st.booleans())
form_types = st.sampled_from(
    [
        FORM_TYPE,
        f"{FORM_TYPE}; charset=UTF-8",
        "Application/X-WWW-Form-URLEncoded",
        f"  {FORM_TYPE} ;charset=utf-8",
    ]
)
# Any text a portal may send, except NUL (refused with 400: see the "nul" defect).
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
names = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=10)


def positive(value: int) -> st.SearchStrategy[str]:
    """`value` as a portal might write it: leading zeros or blanks around it (`\\x1c` is blank
    to the parser's regex but not to `int()`: it used to make a 503)."""
    return st.builds(
        lambda zeros, pad: f"{pad}{'0' * zeros}{value}{pad}",
        st.integers(0, 2),
        st.sampled_from(["", " ", "\t", "\x1c"]),
    )


not_numbers = st.one_of(
    st.sampled_from([" ", "1.5", "1e3", "0x1F", "+7", "1 2", "\uff15x", "12a", "NaN", "∞"]),
    texts.filter(lambda text: text.strip() != "" and not any(c.isdigit() for c in text)),
    st.integers(1, BIGINT).map(lambda n: f"-{n}"),
)
"""Never a whole number, never empty."""

out_of_range = st.one_of(
    st.integers(BIGINT + 1, 10**40).map(str),
    st.integers(4_301, 20_000).map(lambda digits: "9" * digits),
)
"""Whole numbers no `bigint` holds, up to ones Python refuses to convert (over 4,300 digits)."""


def bad_numbers(*, zero: bool) -> st.SearchStrategy[str]:
    """Not a number, too large, and (for what must be positive) zero."""
    zeros = st.sampled_from(["0", "000", " 0 "]) if zero else st.nothing()
    return st.one_of(not_numbers, out_of_range, zeros)


missing: st.SearchStrategy[str | None] = st.sampled_from([None, ""])
"""Not sent (None) or sent empty."""


def near_misses(*valid: str) -> st.SearchStrategy[str]:
    """Strings one small edit away from a valid one: what a forger or a typo produces."""

    @st.composite
    def edit(draw: st.DrawFn) -> str:
        original = draw(st.sampled_from(valid))
        i = draw(st.integers(0, len(original) - 1))
        other = draw(st.characters(codec="utf-8", exclude_characters="\x00"))
        return draw(
            st.sampled_from(
                [
                    original[:i] + other + original[i + 1 :],
                    original[:i] + original[i + 1 :],
                    original[:i] + other + original[i:],
                    original.swapcase(),
                    original.upper(),
                    f" {original}",
                    f"{original}\n",
                    original + original[-1],
                    original[:i],
                    original.replace("o", "\u043e"),  # Cyrillic o
                    original.replace("a", "\u0430"),  # Cyrillic a
                    "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in original),
                ]
            )
        )

    return edit().filter(lambda text: text not in valid)


@st.composite
def extras(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Harmless parameters a portal or an app may add: plain, nested up to the allowed depth,
    lists (`x[]`), repeated (the last one counts) and, now and then, a huge key."""
    pairs: list[tuple[str, str]] = []
    for name in draw(st.lists(names, max_size=5, unique_by=str.lower)):
        key = f"x_{name}"
        shape = draw(st.sampled_from(["plain", "nested", "list", "repeated"]))
        if shape == "nested":
            path = draw(st.lists(names, min_size=1, max_size=MAX_KEY_DEPTH - 1))
            pairs.append((key + "".join(f"[{part}]" for part in path), draw(texts)))
        elif shape == "list":
            pairs.extend((f"{key}[]", value) for value in draw(st.lists(texts, max_size=4)))
        else:
            pairs.extend((key, draw(texts)) for _ in range(1 if shape == "plain" else 3))
    if draw(st.integers(0, 9)) == 0:
        char, most = draw(st.sampled_from([("k", 30_000), ("Ж", 6_000)]))
        pairs.append(("x_" + char * draw(st.integers(1_000, most)), draw(texts)))
    return pairs


# ------------------------------------------------------------------------------------------------
# The event endpoint


@dataclass(frozen=True)
class EventForm:
    """A valid Bitrix24 event, written one of the many ways a form can be written."""

    pairs: Pairs
    encoding: Encoding
    content_type: str
    fill_to_limit: bool
    stored: Stored
    id_key: str
    entity_key: str

    def body(self) -> bytes:
        text = self.encoding.form(self.pairs)
        if self.fill_to_limit:
            text += amps_to(text, MAX_PARAMETERS)
        return text.encode()

    def case(self, kind: str = "valid", pairs: Pairs | None = None) -> Case:
        form = self if pairs is None else replace(self, pairs=pairs, fill_to_limit=False)
        return Case(kind, form.body(), {"Content-Type": self.content_type})


@st.composite
def event_forms(draw: st.DrawFn, member: str) -> EventForm:
    base = draw(st.sampled_from(ITEM_EVENTS))
    per_type = draw(st.booleans())
    name = base + (f"_{NPS_TYPE}" if per_type else "")
    cases = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.lower() if low else c for c, low in zip(name, cases, strict=True))
    name = draw(st.sampled_from(["", " ", "\t"])) + name + draw(st.sampled_from(["", " ", "\n"]))
    fields = draw(st.sampled_from(["FIELDS", "fields", "Fields"]))
    id_key = f"data[{fields}][{draw(st.sampled_from(['ID', 'id']))}]"
    entity_key = f"data[{fields}][ENTITY_TYPE_ID]"
    item_id = draw(st.integers(1, BIGINT))
    ts = draw(st.none() | st.integers(1, BIGINT))
    pairs: list[tuple[str, str]] = [
        ("event", name),
        ("event_handler_id", str(draw(st.integers(0, 10**6)))),
        (id_key, draw(positive(item_id))),
        ("auth[member_id]", member),
        ("auth[application_token]", draw(st.sampled_from(TOKENS))),
        ("auth[domain]", draw(st.sampled_from(["portal.bitrix24.ru", "b24-x.example"]) | texts)),
        ("auth[client_endpoint]", "https://portal.bitrix24.ru/rest/"),
        ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
        ("auth[expires_in]", "3600"),
        (f"data[{fields}][x_extra]", draw(texts)),
    ]
    if not per_type or draw(st.booleans()):
        pairs.append((entity_key, draw(positive(NPS_TYPE))))
    if ts is not None:
        pairs.append(("ts", draw(positive(ts))))
    elif draw(st.booleans()):
        pairs.append(("ts", ""))
    pairs.extend(draw(extras()))
    ordered = list(draw(st.permutations(pairs)))
    if draw(st.booleans()):  # a repeated scalar: the last one counts
        key = draw(st.sampled_from(["event_handler_id", id_key, "auth[domain]"]))
        ordered.insert(0, (key, draw(texts)))
    return EventForm(
        pairs=tuple(ordered),
        encoding=draw(encodings),
        content_type=draw(form_types),
        fill_to_limit=draw(st.integers(0, 9)) == 0,
        stored=Stored(member, "event", base, item_id, ts),
        id_key=id_key,
        entity_key=entity_key,
    )


Broken = tuple[Case, Expect]


@st.composite
def bad_item_id(draw: st.DrawFn, form: EventForm) -> Broken:
    field = "data[FIELDS][ID]"
    value = draw(bad_numbers(zero=True) | missing)
    pairs = setting(form.pairs, form.id_key, value)
    if value is not None and draw(st.booleans()):  # sent as a list or a group
        pairs = (
            *without(pairs, form.id_key),
            (form.id_key + draw(st.sampled_from(["[]", "[a]"])), value),
        )
    return form.case("bad item id", pairs), Expect(400, field)


@st.composite
def bad_entity_type(draw: st.DrawFn, form: EventForm) -> Broken:
    field = "data[FIELDS][ENTITY_TYPE_ID]"
    base = form.stored.event
    choice = draw(st.sampled_from(["bad", "other", "name differs", "other in name"]))
    if choice == "bad":
        pairs = setting(form.pairs, "event", base)
        value = draw(bad_numbers(zero=True) | missing)
        return form.case("bad entity type", setting(pairs, form.entity_key, value)), Expect(
            400, field
        )
    other = draw(st.integers(1, BIGINT).filter(lambda n: n != NPS_TYPE))
    if choice == "other":
        pairs = setting(setting(form.pairs, "event", base), form.entity_key, str(other))
        return form.case("other entity type", pairs), IGNORED
    if choice == "name differs":
        pairs = setting(setting(form.pairs, "event", f"{base}_{other}"), form.entity_key, "1038")
        return form.case("entity type differs from the name", pairs), Expect(400, field)
    in_name = draw(st.one_of(st.just(str(other)), out_of_range))
    pairs = setting(setting(form.pairs, "event", f"{base}_{in_name}"), form.entity_key, None)
    if int(in_name[:25]) > BIGINT:
        return form.case("entity type in name out of range", pairs), Expect(400, "event")
    return form.case("other entity type in the name", pairs), IGNORED


other_event_names = st.one_of(
    st.sampled_from(
        [
            "ONCRMDEALDELETE",
            "ONCRMDYNAMICITEMDELETE",
            "onCrmContactUpdate",
            "ONAPPINSTALL",
            "ONCRMDYNAMICITEMADD_",
            "ONCRMDYNAMICITEMADDX",
            "ONCRMDYNAMICITEMUPDATE_1038_1",
            "ONCRMDYNAMICITEMADD 1038",
            "ONCRMDYNAMICITEMADD_-1038",
            "ONCRMDYNAMICITEM",
            "ONCRMDYNAMICITEMUPDATE_x",
        ]
    ),
    st.text(string.ascii_letters + string.digits + "_ ", min_size=1, max_size=40).filter(
        lambda name: (
            name.strip() != ""
            and not name.strip().upper().startswith("ONCRMDYNAMIC")
            and name.strip().upper() not in DEAL_EVENTS
            and name.strip().upper() not in UPDATE_EVENTS
        )  # NPS deal events, accepted; lead and task updates, forwarded
    ),
)


@st.composite
def other_event(draw: st.DrawFn, form: EventForm) -> Broken:
    pairs = setting(form.pairs, "event", draw(other_event_names))
    if draw(st.booleans()):  # other events carry other fields: none of the item checks apply
        pairs = setting(setting(pairs, form.id_key, None), form.entity_key, None)
    return form.case("other event", pairs), IGNORED


@st.composite
def bad_event_name(draw: st.DrawFn, form: EventForm) -> Broken:
    pairs = without(form.pairs, "event")
    choice = draw(st.sampled_from(["missing", "blank", "group"]))
    if choice == "blank":
        pairs = (*pairs, ("event", draw(st.sampled_from(["", " ", "\t\n"]))))
    elif choice == "group":
        pairs = (*pairs, (draw(st.sampled_from(["event[]", "event[0]"])), ITEM_EVENTS[0]))
    return form.case(f"event name {choice}", pairs), Expect(400, "event")


@st.composite
def bad_ts(draw: st.DrawFn, form: EventForm) -> Broken:
    value = draw(bad_numbers(zero=True))
    pairs = setting(form.pairs, "ts", value)
    if draw(st.booleans()):
        pairs = (*without(pairs, "ts"), ("ts[]", str(value)))
    return form.case("bad ts", pairs), Expect(400, "ts")


@st.composite
def forged_token(draw: st.DrawFn, form: EventForm) -> Broken:
    key = "auth[application_token]"
    choice = draw(st.sampled_from(["missing", "empty", "near miss", "group", "renamed", "last"]))
    pairs = without(form.pairs, key)
    forged = draw(near_misses(*TOKENS))
    if choice == "empty":
        pairs = (*pairs, (key, ""))
    elif choice == "near miss":
        pairs = (*pairs, (key, forged))
    elif choice == "group":
        pairs = (*pairs, (f"{key}[]", TOKENS[0]))
    elif choice == "renamed":
        renamed = draw(st.sampled_from(["auth[APPLICATION_TOKEN]", "application_token", "token"]))
        pairs = (*pairs, (renamed, TOKENS[0]))
    elif choice == "last":  # a genuine token first, a forged one last: the last one counts
        pairs = (*pairs, (key, TOKENS[1]), (key, forged))
    return form.case(f"token {choice}", pairs), Expect(401, key)


Added = tuple[tuple[tuple[str, str], ...], bool]


def malformed_keys(existing: Pairs) -> st.SearchStrategy[Added]:
    """Parameters whose name is broken, too deep or clashing with another's shape, and whether
    they must come after `existing` (a clash with one of them). The last pair is refused."""
    part = st.text(string.ascii_letters + "_- .", min_size=1, max_size=8)
    groups = sorted({top(key) for key, _ in existing if "[" in key})
    scalars = sorted({key for key, _ in existing if not key.endswith("[]")})
    broken = st.one_of(
        st.builds(lambda a, b: f"{a}[{b}", part, part | st.just("")),
        st.builds(lambda a, b: f"{a}]{b}", part, part | st.just("")),
        st.builds(lambda a, b: f"[{a}]{b}", part, part | st.just("")),
        st.builds(lambda a, b, c: f"{a}[{b}]{c}", part, part | st.just(""), part),
        st.builds(lambda a, b: f"{a}[{b}[{b}]]", part, part),
        st.sampled_from(["", "[]", "]", "[", "a[]]", "a[[b]]"]),
        st.builds(lambda a, depth: a + "[d]" * depth, part, st.integers(MAX_KEY_DEPTH, 2_000)),
    ).map(lambda key: (((key, "1"),), False))
    clashes: st.SearchStrategy[Added] = st.one_of(
        part.map(lambda a: (((f"y_{a}", "1"), (f"y_{a}[k]", "2")), False)),
        part.map(lambda a: (((f"y_{a}[k]", "1"), (f"y_{a}", "2")), False)),
        part.map(lambda a: (((f"y_{a}[]", "1"), (f"y_{a}[0][k]", "2")), False)),
    )
    if groups:  # `auth=1` after `auth[domain]=…`
        clashes |= st.sampled_from(groups).map(lambda group: (((group, "1"),), True))
    if scalars:  # `id[k]=1` after `id=…`
        clashes |= st.sampled_from(scalars).map(lambda key: (((f"{key}[k]", "1"),), True))
    return broken | clashes


@st.composite
def malformed_key(draw: st.DrawFn, form: EventForm) -> Broken:
    added, last = draw(malformed_keys(form.pairs))
    at = len(form.pairs) if last else draw(st.integers(0, len(form.pairs)))
    pairs = (*form.pairs[:at], *added, *form.pairs[at:])
    return form.case("malformed key", pairs), Expect(400, added[-1][0])


def broken_bytes(body: bytes, part: str) -> st.SearchStrategy[tuple[str, bytes, Expect]]:
    """`body` with one encoding defect at a pair boundary: a broken percent-escape, bytes that
    are not UTF-8 (raw or escaped), a NUL, or more parameters than allowed."""
    bounds = [0, len(body), *(m.start() for m in re.finditer(b"&", body))]
    invalid = st.binary(min_size=1, max_size=6).filter(_not_utf8)

    @st.composite
    def defect(draw: st.DrawFn) -> tuple[str, bytes, Expect]:
        at = draw(st.sampled_from(bounds))
        kind = draw(st.sampled_from(["percent", "raw bytes", "escaped bytes", "nul", "too many"]))
        if kind == "percent":
            hexdigit = draw(st.sampled_from("0123456789abcdefABCDEF"))
            bad = draw(st.sampled_from("GZgz%&=+ -x\x7f"))
            junk = draw(st.sampled_from([f"%{bad}", f"%{hexdigit}{bad}", f"%{bad}{hexdigit}"]))
            if at == len(body) and draw(st.booleans()):
                junk = draw(st.sampled_from(["%", f"%{hexdigit}"]))
            inserted = b"&x_p=" + junk.encode()
        elif kind == "raw bytes":
            inserted = b"&x_b=" + draw(invalid)
        elif kind == "escaped bytes":
            escaped = "".join(f"%{byte:02X}" for byte in draw(invalid)).encode()
            inserted = draw(st.sampled_from([b"&x_e=" + escaped, b"&" + escaped + b"=1"]))
        elif kind == "nul":
            inserted = draw(st.sampled_from([b"&x_n=a%00b", b"&x_n=\x00", b"&x%00n=1"]))
        else:
            fields = MAX_PARAMETERS + draw(st.integers(2, 300))
            pads = draw(st.sampled_from(["&", "&x_m=1"]))
            count = max(1, fields - 1 - body.count(b"&"))
            inserted = (pads * count).encode()
        if at == 0:  # `x=…&` before the first pair rather than `&x=…` glued to it
            inserted = inserted[1:] + b"&"
        return kind, body[:at] + inserted + body[at:], Expect(400, part)

    return defect()


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def bad_encoding(draw: st.DrawFn, form: EventForm) -> Broken:
    kind, body, expect = draw(broken_bytes(form.case().body, "body"))
    return Case(kind, body, {"Content-Type": form.content_type}), expect


def oversized(body: bytes, headers: Mapping[str, str]) -> st.SearchStrategy[Broken]:
    """Over the limit by the bytes sent (with or without Content-Length, or a false one), by
    the Content-Length announced, or with a Content-Length that is not a byte count."""

    @st.composite
    def sized(draw: st.DrawFn) -> Broken:
        choice = draw(st.sampled_from(["large", "chunked", "understated", "announced", "header"]))
        over = MAX_BODY_BYTES + draw(st.integers(1, 40_000)) - len(body)
        padded = body + b"&x_pad=" + b"x" * max(over, 1)
        if choice == "large":
            return Case("large body", padded, headers), Expect(413, "body")
        if choice == "chunked":
            return Case("large chunked body", padded, headers, chunked=True), Expect(413, "body")
        if choice == "understated":
            length = {"Content-Length": str(draw(st.integers(0, MAX_BODY_BYTES)))}
            return Case("understated length", padded, {**headers, **length}), Expect(413, "body")
        if choice == "announced":
            announced = draw(
                st.one_of(
                    st.integers(MAX_BODY_BYTES + 1, 10**30).map(str),
                    st.integers(30, 6_000).map(lambda n: "9" * n),
                    st.integers(4_301, 6_000).map(lambda n: "0" * n + "1" * 6),
                )
            )
            return Case("announced large", body, {**headers, "Content-Length": announced}), Expect(
                413, "body"
            )
        value = draw(st.sampled_from(["abc", "-1", "1e3", "0x10", "", "12 34", "1_000"]))
        return Case("bad Content-Length", body, {**headers, "Content-Length": value}), Expect(
            400, "Content-Length"
        )

    return sized()


@st.composite
def too_large(draw: st.DrawFn, form: EventForm) -> Broken:
    return draw(oversized(form.case().body, {"Content-Type": form.content_type}))


other_media_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "text/html",
            "application/xml",
            "multipart/form-data; boundary=fuzz",
            "application/x-www-form-urlencodedx",
            "application/x-www-form",
            "x-www-form-urlencoded",
            "application/octet-stream",
            ";application/x-www-form-urlencoded",
            "*/*",
        ]
    ),
    st.builds(lambda a, b: f"{a}/{b}", names, names),
)


def wrong_types(pairs: Pairs, body: bytes) -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    """The form under another content type, or none; or the same data as JSON or multipart."""
    as_json = json.dumps(dict(pairs)).encode()
    boundary = "fuzzboundary"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{quote(k)}"\r\n\r\n{v}\r\n'
        for k, v in pairs
    )
    multipart = (parts + f"--{boundary}--\r\n").encode()
    return st.one_of(
        other_media_types.map(lambda media: (body, {"Content-Type": media})),
        st.just((body, {})),
        st.just((as_json, {"Content-Type": "application/json"})),
        st.just((multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"})),
    )


@st.composite
def wrong_content_type(draw: st.DrawFn, form: EventForm) -> Broken:
    body, headers = draw(wrong_types(form.pairs, form.case().body))
    return Case("wrong content type", body, headers), Expect(415, "Content-Type")


EVENT_BREAKS = (
    bad_item_id,
    bad_entity_type,
    other_event,
    bad_event_name,
    bad_ts,
    forged_token,
    malformed_key,
    bad_encoding,
    too_large,
    wrong_content_type,
)


@st.composite
def broken_events(draw: st.DrawFn, form: EventForm) -> Broken:
    return draw(draw(st.sampled_from(EVENT_BREAKS))(form))


# ------------------------------------------------------------------------------------------------
# The robot endpoint


@dataclass(frozen=True)
class RobotForm:
    """A valid robot call: each parameter group (top-level name) in the query or in the body.
    Without a body, any content type (or none) goes: it is checked only when there is one."""

    params: Pairs
    in_body: frozenset[str]
    encoding: Encoding
    content_type: str
    blank_body: bytes
    blank_type: str | None
    stored: Stored

    def parts(self, params: Pairs | None = None) -> tuple[bytes, bytes]:
        params = self.params if params is None else params
        query = [pair for pair in params if top(pair[0]) not in self.in_body]
        body = [pair for pair in params if top(pair[0]) in self.in_body]
        return self.encoding.form(query).encode(), self.encoding.form(body).encode()

    def assemble(self, kind: str, query: bytes, body: bytes) -> Case:
        if body:
            return Case(kind, body, {"Content-Type": self.content_type}, query)
        blank = {} if self.blank_type is None else {"Content-Type": self.blank_type}
        return Case(kind, self.blank_body, blank, query)

    def case(self, kind: str = "valid", params: Pairs | None = None) -> Case:
        return self.assemble(kind, *self.parts(params))


def robot_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """A time as a robot may send it (ISO 8601 or `dd.mm.yyyy hh:mm:ss`) and what it means."""
    moment = draw(st.datetimes(datetime(1971, 1, 1), datetime(9998, 12, 31)))
    layout = draw(st.sampled_from(["iso", "iso offset", "iso Z", "local"]))
    if layout == "local":
        moment = moment.replace(microsecond=0)
        return (
            f"{moment.day:02}.{moment.month:02}.{moment.year:04} {moment:%H:%M:%S}",
            moment.replace(tzinfo=UTC),
        )
    if layout == "iso Z":
        return moment.isoformat() + "Z", moment.replace(tzinfo=UTC)
    if layout == "iso":
        return moment.isoformat(sep=draw(st.sampled_from("T "))), moment.replace(tzinfo=UTC)
    offset = timezone(timedelta(minutes=draw(st.integers(-1439, 1439))))
    aware = moment.replace(tzinfo=offset)
    return aware.isoformat(), aware


ITEM_FIELDS = (
    "UF_CRM_5_SCORE",
    "UF_CRM_5_SERUM_SCORE",
    "UF_CRM_5_CRYO_SCORE",
    "UF_CRM_5_SERUM_TESTED",
    "UF_CRM_5_TO_SERVICE",
    "UF_CRM_5_COMMENT",
)


@st.composite
def robot_forms(draw: st.DrawFn, member: str) -> RobotForm:
    item_id = draw(st.integers(1, BIGINT))
    params: list[tuple[str, str]] = [
        (draw(st.sampled_from(["application_token", TOKEN_FIELD])), draw(st.sampled_from(TOKENS))),
        (draw(st.sampled_from(["member_id", MEMBER_FIELD])), member),
        ("id", draw(positive(item_id))),
        (
            draw(st.sampled_from(["category_id", "categoryId"])),
            draw(st.sampled_from(["10", "12", "14", "0"]) | st.integers(0, BIGINT).map(str)),
        ),
        ("auth[domain]", draw(st.sampled_from(["portal.bitrix24.ru", "b24.example"]) | texts)),
    ]
    if draw(st.booleans()):
        params.append((draw(st.sampled_from(["entity_type_id", "entityTypeId"])), str(NPS_TYPE)))
    for aliases in (("contact_id", "contactId"), ("responsible_id", "assignedById")):
        if draw(st.booleans()):
            params.append((draw(st.sampled_from(aliases)), str(draw(st.integers(1, 10**6)))))
    ts: int | None = None
    for name, camel in (("created_time", "createdTime"), ("updated_time", "updatedTime")):
        if draw(st.booleans()):
            text, moment = robot_times(draw)
            params.append((draw(st.sampled_from([name, camel])), text))
            if name == "updated_time":
                ts = int(moment.timestamp())
    for code in draw(st.lists(st.sampled_from(ITEM_FIELDS), unique=True)):
        value = draw(st.sampled_from(["0", "10", "Y", "N", "7"]) | texts)
        if draw(st.booleans()):
            params.append((code, value))
        else:  # a multiple field
            params.extend((f"{code}[]", v) for v in (value, draw(texts)))
    params.extend(draw(extras()))
    groups = sorted({top(key) for key, _ in params})
    return RobotForm(
        params=tuple(draw(st.permutations(params))),
        in_body=frozenset(group for group in groups if draw(st.booleans())),
        encoding=draw(encodings),
        content_type=draw(form_types),
        blank_body=draw(st.sampled_from([b"", b" ", b"\r\n"])),
        blank_type=draw(st.none() | form_types | other_media_types),
        stored=Stored(member, "robot", "ROBOT", item_id, ts),
    )


@st.composite
def robot_bad_id(draw: st.DrawFn, form: RobotForm) -> Broken:
    value = draw(bad_numbers(zero=True) | missing)
    params = setting(form.params, "id", value)
    if value is not None and draw(st.booleans()):
        params = (*without(params, "id"), ("id[]", value))
    return form.case("robot bad id", params), Expect(400, "id")


@st.composite
def robot_bad_category(draw: st.DrawFn, form: RobotForm) -> Broken:
    params = without(form.params, "category_id", "categoryId")
    value = draw(bad_numbers(zero=False) | missing)
    if value is not None:
        params = (*params, (draw(st.sampled_from(["category_id", "categoryId"])), value))
    return form.case("robot bad category", params), Expect(400, "category_id")


@st.composite
def robot_entity_type(draw: st.DrawFn, form: RobotForm) -> Broken:
    params = without(form.params, "entity_type_id", "entityTypeId")
    key = draw(st.sampled_from(["entity_type_id", "entityTypeId"]))
    if draw(st.booleans()):
        # 2 is a deal: a robot call for an NPS deal is accepted (the example has a deal survey).
        other = draw(st.integers(1, BIGINT).filter(lambda n: n not in (NPS_TYPE, 2)))
        return form.case("robot other entity type", (*params, (key, str(other)))), IGNORED
    value = draw(bad_numbers(zero=True) | st.just(""))
    return form.case("robot bad entity type", (*params, (key, value))), Expect(
        400, "entity_type_id"
    )


bad_times = st.one_of(
    st.sampled_from(
        [
            " ",
            "2024-13-01T00:00:00",
            "2024-02-30T10:00:00",
            "2024-07-22T25:00:00",
            "32.07.2024 18:00:08",
            "22.07.2024 18:61",
            "22/07/2024",
            "yesterday",
            "2024-07-22T18:00:08+25:00",
            "1721660408",
        ]
    ),
    st.text(string.ascii_letters + " :-.", min_size=1).filter(lambda text: text.strip() != ""),
)


@st.composite
def robot_bad_time(draw: st.DrawFn, form: RobotForm) -> Broken:
    name = draw(st.sampled_from(["created_time", "updated_time"]))
    camel = "createdTime" if name == "created_time" else "updatedTime"
    key = draw(st.sampled_from([name, camel]))
    value = draw(bad_times)
    if draw(st.integers(0, 4)) == 0:  # sent as a group
        key, value = f"{key}[]", "2024-07-22T18:00:08Z"
    params = (*without(form.params, name, camel), (key, value))
    return form.case("robot bad time", params), Expect(400, name)


@st.composite
def robot_forged_token(draw: st.DrawFn, form: RobotForm) -> Broken:
    params = without(form.params, "application_token", TOKEN_FIELD)
    key = draw(st.sampled_from(["application_token", TOKEN_FIELD]))
    forged = draw(near_misses(*TOKENS) | st.just(""))
    choice = draw(st.sampled_from(["missing", "forged", "group", "forged first"]))
    if choice == "forged":
        params = (*params, (key, forged))
    elif choice == "group":
        params = (*params, ("application_token[]", TOKENS[0]))
    elif choice == "forged first":  # `application_token` wins over `auth[application_token]`
        params = (*params, ("application_token", forged), (TOKEN_FIELD, TOKENS[0]))
    return form.case(f"robot token {choice}", params), Expect(401, "application_token")


@st.composite
def robot_malformed_key(draw: st.DrawFn, form: RobotForm) -> Broken:
    query, body = form.parts()
    in_body = draw(st.booleans())
    part = tuple(pair for pair in form.params if (top(pair[0]) in form.in_body) == in_body)
    added, _ = draw(malformed_keys(part))  # appended: after whatever it clashes with
    extra = form.encoding.form(added).encode()
    if in_body:
        body = body + b"&" + extra if body else extra
    else:
        query = query + b"&" + extra if query else extra
    return form.assemble("robot malformed key", query, body), Expect(400, added[-1][0])


@st.composite
def robot_bad_encoding(draw: st.DrawFn, form: RobotForm) -> Broken:
    query, body = form.parts()
    if draw(st.booleans()):
        kind, broken, expect = draw(broken_bytes(body, "body"))
        return form.assemble(f"body {kind}", query, broken), expect
    kind, broken, expect = draw(broken_bytes(query, "query"))
    return form.assemble(f"query {kind}", broken, body), expect


@st.composite
def robot_too_large(draw: st.DrawFn, form: RobotForm) -> Broken:
    query, body = form.parts()
    case, expect = draw(oversized(body, {"Content-Type": form.content_type}))
    return replace(case, query=query), expect


@st.composite
def robot_wrong_type(draw: st.DrawFn, form: RobotForm) -> Broken:
    if not form.in_body:  # something must travel in the body for its type to matter
        form = replace(form, in_body=frozenset({top(form.params[0][0])}))
    query, body = form.parts()
    body_pairs = tuple(pair for pair in form.params if top(pair[0]) in form.in_body)
    content, headers = draw(wrong_types(body_pairs, body))
    return Case("robot wrong content type", content, headers, query), Expect(415, "Content-Type")


ROBOT_BREAKS = (
    robot_bad_id,
    robot_bad_category,
    robot_entity_type,
    robot_bad_time,
    robot_forged_token,
    robot_malformed_key,
    robot_bad_encoding,
    robot_too_large,
    robot_wrong_type,
)


@st.composite
def broken_robots(draw: st.DrawFn, form: RobotForm) -> Broken:
    return draw(draw(st.sampled_from(ROBOT_BREAKS))(form))


# ------------------------------------------------------------------------------------------------
# The runs


def member_id() -> str:
    """A portal of its own for each example: what it stored is told apart from all others."""
    return f"{MEMBER_PREFIX}{uuid.uuid4().hex}"


@fuzz(120)
@given(data=st.data())
async def test_valid_events_are_stored_and_queued_exactly_once(
    data: st.DataObject, fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    form = data.draw(event_forms(member_id()))
    case = form.case()
    hypothesis.assume(len(case.body) <= MAX_BODY_BYTES)
    async with new_deployment(fuzz_settings, pool) as ingest:
        await accepted_once(ingest, pool, EVENT_PATH, case, form.stored)
        await replayed(ingest, pool, EVENT_PATH, case, form.stored)


@fuzz(450)
@given(data=st.data())
async def test_broken_events_are_refused_with_a_reason_and_store_nothing(
    data: st.DataObject, fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    form = data.draw(event_forms(member_id()))
    control = form.case()
    hypothesis.assume(len(control.body) <= MAX_BODY_BYTES)
    case, expect = data.draw(broken_events(form))
    hypothesis.assume(case.chunked or len(case.body) <= MAX_BODY_BYTES or expect.status == 413)
    async with new_deployment(fuzz_settings, pool) as ingest:
        await refused_and_nothing_stored(ingest, pool, EVENT_PATH, case, expect)
        await accepted_once(ingest, pool, EVENT_PATH, control, form.stored)


@fuzz(120)
@given(data=st.data())
async def test_valid_robot_calls_are_stored_and_queued_exactly_once(
    data: st.DataObject, fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    form = data.draw(robot_forms(member_id()))
    case = form.case()
    hypothesis.assume(len(case.body) <= MAX_BODY_BYTES)
    async with new_deployment(fuzz_settings, pool) as ingest:
        await accepted_once(ingest, pool, ROBOT_PATH, case, form.stored)
        await replayed(ingest, pool, ROBOT_PATH, case, form.stored)


@fuzz(400)
@given(data=st.data())
async def test_broken_robot_calls_are_refused_with_a_reason_and_store_nothing(
    data: st.DataObject, fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    form = data.draw(robot_forms(member_id()))
    control = form.case()
    hypothesis.assume(len(control.body) <= MAX_BODY_BYTES)
    case, expect = data.draw(broken_robots(form))
    hypothesis.assume(case.chunked or len(case.body) <= MAX_BODY_BYTES or expect.status == 413)
    async with new_deployment(fuzz_settings, pool) as ingest:
        await refused_and_nothing_stored(ingest, pool, ROBOT_PATH, case, expect)
        await accepted_once(ingest, pool, ROBOT_PATH, control, form.stored)


@fuzz(120)
@given(data=st.data())
async def test_forged_portals_and_tokens_on_a_locked_portal_store_nothing(
    data: st.DataObject, fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    """With `portal.member_id` set: another portal's calls are 403, a wrong token 401 first."""
    mine = member_id()
    form: EventForm | RobotForm
    if data.draw(st.booleans(), label="robot"):
        form = data.draw(robot_forms(mine))
        path, fields = ROBOT_PATH, ("application_token", "member_id")
        present = {key for key, _ in form.params}
        member_keys: tuple[str, ...] = ("member_id", MEMBER_FIELD)
        member_key = "member_id" if "member_id" in present else MEMBER_FIELD
        token_key = "application_token" if "application_token" in present else TOKEN_FIELD
        pairs = form.params
    else:
        form = data.draw(event_forms(mine))
        path, fields = EVENT_PATH, (TOKEN_FIELD, MEMBER_FIELD)
        member_keys = (MEMBER_FIELD,)
        member_key, token_key = MEMBER_FIELD, TOKEN_FIELD
        pairs = form.pairs
    control = form.case()
    hypothesis.assume(len(control.body) <= MAX_BODY_BYTES)
    foreign = data.draw(
        st.none() | st.just("") | st.builds(member_id) | near_misses(mine) | texts,
        label="foreign member id",
    )
    hypothesis.assume(foreign != mine)
    forged = without(pairs, *member_keys)
    if foreign is not None:
        forged = (*forged, (member_key, foreign))
    expect = Expect(403, fields[1])
    if data.draw(st.booleans(), label="token forged too"):
        forged = setting(forged, token_key, data.draw(near_misses(*TOKENS) | st.just("")))
        expect = Expect(401, fields[0])
    async with client_for(fuzz_settings, locked_to(mine), pool) as client:
        await refused_and_nothing_stored(client, pool, path, form.case("forged", forged), expect)
        await accepted_once(client, pool, path, control, form.stored)


garbage = st.one_of(
    st.binary(max_size=3_000),
    st.text(max_size=1_000).map(str.encode),
    st.lists(
        st.tuples(
            st.text("ab[]%=&+ \x00é_0", max_size=12), st.text("ab[]%=&+ \x00é_09", max_size=12)
        ),
        max_size=40,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode()),
)


@fuzz(250)
@given(
    body=garbage,
    query=garbage,
    content_type=st.none() | form_types | other_media_types,
    robot=st.booleans(),
)
async def test_random_bytes_never_fail_and_store_nothing(
    body: bytes,
    query: bytes,
    content_type: str | None,
    robot: bool,
    ingest: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """Without a genuine token nothing gets through, whatever the bytes: a reasoned 4xx."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    case = Case("random", body, headers, query if robot else b"")
    before = await marks(pool)
    response = await post(ingest, ROBOT_PATH if robot else EVENT_PATH, case)
    answered(response)
    hypothesis.event(f"random: {response.status_code}")
    assert response.status_code in (400, 401, 415), (response.status_code, response.text)
    assert await marks(pool) == before
