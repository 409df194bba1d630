"""The survey form and opt-out endpoints fuzzed with hypothesis: whatever arrives, never a 5xx,
and an answer is stored only when it is one the survey can take."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg
import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from services.survey.app import create_app
from services.survey.form import MAX_COMMENT
from services.survey.requests import new_request
from services.survey.store import add_request
from shared.outbox import Outbox
from shared.portal_config import PortalConfig
from tests.support.survey import setup_for

FIELD_NAMES = ("score", "service", "comment", "csrf", "score_0", "tested_0", "score_3", "x")
CONTENT_TYPES = (
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=zz",
    "application/json",
    "text/plain",
    None,
)


@dataclass
class Target:
    client: httpx.AsyncClient
    links: dict[str, str]
    csrf: dict[str, str]


@pytest.fixture(scope="module")
async def target(pool: asyncpg.Pool, portal_config: PortalConfig) -> AsyncIterator[Target]:
    setup = setup_for(portal_config)
    transport = httpx.ASGITransport(app=create_app(pool, Outbox(), setup))
    async with httpx.AsyncClient(transport=transport, base_url="http://survey.test") as client:
        links: dict[str, str] = {}
        csrf: dict[str, str] = {}
        for segment in ("12", "10"):
            request = new_request(
                portal_config, contact_id=9, segment=segment, product=None, lang="en", portal="f"
            )
            async with pool.acquire() as conn:
                await add_request(conn, request)
            link = "/s/" + setup.signer.sign(request.request_id)
            page = await client.get(link)
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found is not None
            links[segment], csrf[segment] = link, found.group(1)
        yield Target(client, links, csrf)


values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "9", "10", "11", "-1", "1", "on", "", "٣", "9.0", "1e1"]),
    st.text(min_size=MAX_COMMENT - 5, max_size=MAX_COMMENT + 5, alphabet="ab\r\n\x00"),
)
forms = st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)), values)


@hypothesis.settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    segment=st.sampled_from(["12", "10"]),
    form=forms,
    raw=st.one_of(st.none(), st.binary(max_size=300)),
    with_csrf=st.booleans(),
    content_type=st.sampled_from(CONTENT_TYPES),
    token=st.one_of(st.none(), st.text(max_size=60)),
    page=st.sampled_from(["", "/optout"]),
)
async def test_the_form_endpoints_never_answer_5xx(
    target: Target,
    pool: asyncpg.Pool,
    segment: str,
    form: dict[str, str],
    raw: bytes | None,
    with_csrf: bool,
    content_type: str | None,
    token: str | None,
    page: str,
) -> None:
    link = (target.links[segment] if token is None else "/s/" + quote(token, safe="")) + page
    if with_csrf:
        form = {**form, "csrf": target.csrf[segment]}
    headers = {} if content_type is None else {"content-type": content_type}
    if raw is None:
        response = await target.client.post(link, data=form, headers=headers)
    else:
        response = await target.client.post(link, content=raw, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 303 and not page:
        answer = json.loads(
            await pool.fetchval(
                """SELECT a.answer FROM survey_answers a JOIN survey_requests r USING (request_id)
                   WHERE r.portal = 'f' AND r.category_id = $1""",
                int(segment),
            )
        )
        scores = [s for s in answer["scores"].values() if s is not None]
        assert all(0 <= s <= 10 for s in scores)
        assert answer["comment"] is None or len(answer["comment"]) <= MAX_COMMENT
