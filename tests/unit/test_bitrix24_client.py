"""The client against scripted portal answers (httpx.MockTransport): requests, errors, retries,
batches, paging, and the webhook secret kept out of every message."""

import asyncio
import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from shared.bitrix24 import (
    Bitrix24Client,
    Bitrix24Error,
    Command,
    MemoryRateBudget,
    NotFound,
    OperationTimeLimit,
    PermanentBitrix24Error,
    PortalUnavailable,
    RateLimited,
)
from shared.bitrix24 import budget as budget_module
from shared.bitrix24 import client as client_module
from shared.portal_config import Rate
from tests.support import T0, FakeClock

SECRET = "k9x7secretcode"
BASE = f"https://portal.example.com/rest/7/{SECRET}/"

Handler = Callable[[str, dict[str, Any]], httpx.Response]


class Portal:
    """Records each request (method, JSON body) and answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1].removesuffix(".json")
        body = json.loads(request.content) if request.content else {}
        self.requests.append((method, body))
        self.raw.append(request)
        return self.handler(method, body)

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]


def ok(result: Any, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": result, **extra, "time": {"processing": 0.01}})


def error(status: int, code: str, description: str = "", **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "error_description": description, **extra})


def make_client(
    handler: Handler, rate: Rate | None = None, **options: Any
) -> tuple[Bitrix24Client, Portal, FakeClock]:
    portal = Portal(handler)
    clock = FakeClock()
    budget = MemoryRateBudget(rate, clock=clock, sleep=clock.sleep, operating_limit_s=100.0)
    options.setdefault("backoff_s", 0.001)
    options.setdefault("backoff_max_s", 0.002)
    client = Bitrix24Client(BASE, budget, transport=httpx.MockTransport(portal), **options)
    return client, portal, clock


def batch_reply(body: dict[str, Any]) -> httpx.Response:
    """A batch answer running every command as `crm.contact.get` would (result = its name)."""
    commands: dict[str, str] = body["cmd"]
    return ok(
        {
            "result": {name: {"ID": name} for name in commands},
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": {name: {"processing": 0.5} for name in commands},
        }
    )


# --- single calls -------------------------------------------------------------------------------


async def test_a_call_posts_json_to_the_method_url() -> None:
    client, portal, _ = make_client(lambda m, b: ok({"items": []}, total=0, next=50))
    params = {"entityTypeId": 1038, "filter": {"@id": [1, 2]}, "useOriginalUfNames": "Y"}
    async with client:
        response = await client.call("crm.item.list", params)
    request = portal.raw[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}crm.item.list.json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("b24-nps/")
    assert request.extensions["timeout"]["read"] > 60
    assert portal.requests == [("crm.item.list", params)]
    assert (response.result, response.total, response.next) == ({"items": []}, 0, 50)
    assert response.time == {"processing": 0.01}


async def test_a_legacy_not_found_with_an_empty_code_is_not_found() -> None:
    client, _, _ = make_client(lambda m, b: error(400, "", "Not found"))
    async with client:
        with pytest.raises(NotFound) as caught:
            await client.call("crm.contact.get", {"ID": 999})
    assert (caught.value.status, caught.value.method) == (400, "crm.contact.get")


async def test_a_rest_v3_error_object_is_understood() -> None:
    reply = httpx.Response(400, json={"error": {"code": "NOT_FOUND", "message": "No such item"}})
    client, _, _ = make_client(lambda m, b: reply)
    async with client:
        with pytest.raises(NotFound, match="No such item"):
            await client.call("crm.item.get", {"id": 1})


@pytest.mark.parametrize(
    ("status", "expected", "hint"),
    [
        (200, PermanentBitrix24Error, "non-JSON body"),
        (302, PermanentBitrix24Error, "address changed"),
        (404, PermanentBitrix24Error, "non-JSON body"),
        (502, PortalUnavailable, "non-JSON body"),
    ],
)
async def test_a_non_json_answer_is_a_clear_error(
    status: int, expected: type[Exception], hint: str
) -> None:
    reply = httpx.Response(status, text="<html>nginx</html>", headers={"content-type": "text/html"})
    client, _, _ = make_client(lambda m, b: reply, max_attempts=1)
    async with client:
        with pytest.raises(expected, match=hint) as caught:
            await client.call("crm.item.get", {"id": 1})
    assert caught.value.code == "INVALID_RESPONSE"  # type: ignore[attr-defined]


async def test_a_503_query_limit_is_retried_and_slows_the_bucket() -> None:
    answers = iter([error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"), ok(True)])
    client, portal, clock = make_client(
        lambda m, b: next(answers), rate=Rate(per_second=2, burst=50)
    )
    async with client:
        response = await client.call("crm.contact.update", {"ID": 1, "FIELDS": {"NAME": "x"}})
    assert response.result is True
    assert portal.methods == ["crm.contact.update", "crm.contact.update"]
    assert clock.slept  # the second attempt waited for the bucket the 503 filled


async def test_a_503_query_limit_that_persists_surfaces_after_the_attempts() -> None:
    client, portal, _ = make_client(lambda m, b: error(503, "QUERY_LIMIT_EXCEEDED"), max_attempts=3)
    async with client:
        with pytest.raises(RateLimited):
            await client.call("crm.item.list", {})
    assert len(portal.requests) == 3


async def test_overload_limit_is_never_retried() -> None:
    client, portal, _ = make_client(lambda m, b: error(503, "OVERLOAD_LIMIT", "blocked"))
    async with client:
        with pytest.raises(PermanentBitrix24Error):
            await client.call("crm.item.list", {})
    assert len(portal.requests) == 1


async def test_a_server_error_is_retried_for_a_read() -> None:
    answers = iter([error(500, "INTERNAL_SERVER_ERROR"), error(502, ""), ok({"item": {"id": 1}})])
    client, portal, _ = make_client(lambda m, b: next(answers))
    async with client:
        response = await client.call("crm.item.get", {"entityTypeId": 1038, "id": 1})
    assert response.result == {"item": {"id": 1}}
    assert len(portal.requests) == 3


async def test_a_server_error_on_a_write_surfaces_at_once() -> None:
    client, portal, _ = make_client(lambda m, b: error(500, "INTERNAL_SERVER_ERROR"))
    async with client:
        with pytest.raises(PortalUnavailable):
            await client.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    assert len(portal.requests) == 1


async def test_a_timeout_on_a_write_is_an_uncertain_outcome_not_retried() -> None:
    def hang(method: str, body: dict[str, Any]) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    client, portal, _ = make_client(hang)
    async with client:
        with pytest.raises(PortalUnavailable) as caught:
            await client.call("tasks.task.add", {"fields": {"TITLE": "x"}})
    assert caught.value.code == "TIMEOUT"
    assert len(portal.requests) == 1


async def test_a_network_failure_on_a_read_is_retried() -> None:
    calls = iter([httpx.ConnectError("connection refused"), None])

    def flaky(method: str, body: dict[str, Any]) -> httpx.Response:
        failure = next(calls)
        if failure is not None:
            raise failure
        return ok([{"ID": "1"}])

    client, portal, _ = make_client(flaky)
    async with client:
        response = await client.call("crm.contact.userfield.list", {})
    assert response.result == [{"ID": "1"}]
    assert len(portal.requests) == 2


async def test_a_request_is_counted_when_it_goes_not_while_it_waits_for_a_slot() -> None:
    """The portal counts a request when it receives it. One waiting behind a hung request must
    not be counted yet: its count would drain away before it goes, and the requests queued that
    way would go out together, over the portal's burst, when the hang ends."""
    answer = asyncio.Event()
    received: list[str] = []

    async def hanging(request: httpx.Request) -> httpx.Response:
        received.append(request.url.path)
        await answer.wait()
        return ok([])

    clock = FakeClock()
    budget = MemoryRateBudget(
        Rate(per_second=1, burst=2), headroom=0, clock=clock, sleep=clock.sleep
    )
    async with Bitrix24Client(
        BASE, budget, transport=httpx.MockTransport(hanging), max_in_flight=1
    ) as client:
        calls = [asyncio.create_task(client.call("user.get")) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert len(received) == 1
        assert await budget.room() == 0.0  # one request counted: the one at the portal
        answer.set()
        await asyncio.gather(*calls)
    assert len(received) == 2
    assert await budget.room() == 1.0  # both counted once they went


async def test_a_429_parks_only_that_method_until_the_reset() -> None:
    reset_at = T0 + 300

    refusals = [
        error(429, "OPERATION_TIME_LIMIT", "blocked", time={"operating_reset_at": reset_at})
    ]

    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        if method == "crm.item.list" and refusals:
            return refusals.pop()
        return ok({"items": []})

    client, portal, clock = make_client(handler)
    async with client:
        with pytest.raises(OperationTimeLimit) as caught:
            await client.call("crm.item.list", {})
        assert caught.value.reset_at == reset_at
        with pytest.raises(OperationTimeLimit) as again:
            await client.call("crm.item.list", {})
        assert again.value.reset_at == reset_at
        assert portal.methods == ["crm.item.list"]  # the second call never left the process
        await client.call("crm.item.get", {"id": 1})  # other methods go on
        clock.now = reset_at
        await client.call("crm.item.list", {})
    assert portal.methods == ["crm.item.list", "crm.item.get", "crm.item.list"]


# --- batches ------------------------------------------------------------------------------------


async def test_120_commands_take_three_requests_of_at_most_50() -> None:
    client, portal, _ = make_client(lambda m, b: batch_reply(b))
    commands = [Command(f"c{i}", "crm.contact.get", {"ID": i}) for i in range(120)]
    async with client:
        batch = await client.batch(commands)
    assert portal.methods == ["batch", "batch", "batch"]
    sizes = sorted(len(body["cmd"]) for _, body in portal.requests)
    assert sizes == [20, 50, 50]
    sent = {name: command for _, body in portal.requests for name, command in body["cmd"].items()}
    assert sent["c7"] == "crm.contact.get?ID=7"
    assert all(body["halt"] == 0 for _, body in portal.requests)
    assert all(batch.ok(f"c{i}") for i in range(120))
    assert batch.results["c119"] == {"ID": "c119"}
    assert batch.errors == {}


async def test_empty_sections_arrive_as_lists_and_are_normalised() -> None:
    reply = ok(
        {
            "result": [],
            "result_error": {"a": {"error": "", "error_description": "Not found"}},
            "result_total": [],
            "result_next": [],
            "result_time": [],
        }
    )
    client, _, _ = make_client(lambda m, b: reply)
    async with client:
        batch = await client.batch([Command("a", "crm.contact.get", {"ID": 5})])
    assert batch.results == {}
    assert batch.totals == {}
    assert batch.nexts == {}
    assert isinstance(batch.errors["a"], NotFound)
    assert not batch.ok("a")


async def test_sections_keyed_0_to_n_arrive_as_lists_and_are_mapped_back() -> None:
    reply = ok({"result": [{"ID": "5"}, {"ID": "6"}], "result_error": [], "result_total": [5, 6]})
    client, _, _ = make_client(lambda m, b: reply)
    async with client:
        batch = await client.batch(
            [Command("0", "crm.contact.get", {"ID": 5}), Command("1", "crm.contact.get", {"ID": 6})]
        )
    assert batch.results == {"0": {"ID": "5"}, "1": {"ID": "6"}}
    assert batch.totals == {"0": 5, "1": 6}


async def test_each_command_error_is_its_own_error() -> None:
    reply = ok(
        {
            "result": {"list": [{"ID": "1"}]},
            "result_error": {
                "missing": {"error": "NOT_FOUND", "error_description": "Element not found"},
                "bad": {"error": "ERROR_CORE", "error_description": "Task title not specified"},
            },
            "result_total": {"list": 120},
            "result_next": {"list": 50},
            "result_time": {"list": {"processing": 0.2}},
        }
    )
    client, _, _ = make_client(lambda m, b: reply)
    async with client:
        batch = await client.batch(
            [
                Command("list", "crm.contact.list", {"select": ["ID"]}),
                Command("missing", "crm.item.get", {"entityTypeId": 1038, "id": 9}),
                Command("bad", "tasks.task.add", {"fields": {}}),
            ]
        )
    assert batch.ok("list")
    assert (batch.totals, batch.nexts) == ({"list": 120}, {"list": 50})
    missing, bad = batch.errors["missing"], batch.errors["bad"]
    assert isinstance(missing, NotFound)
    assert (missing.method, missing.status) == ("crm.item.get", None)
    assert type(bad) is PermanentBitrix24Error
    assert bad.method == "tasks.task.add"
    assert str(bad) == "tasks.task.add: ERROR_CORE: Task title not specified"


async def test_command_times_feed_the_operating_tracker() -> None:
    client, _, clock = make_client(lambda m, b: batch_reply(b))
    async with client:
        await client.batch([Command(f"c{i}", "crm.contact.update", {"ID": i}) for i in range(10)])
    assert client.budget.operating.estimate("crm.contact.update", clock.now) == 5.0
    assert client.budget.operating.estimate("batch", clock.now) == 0.0


async def test_a_command_blocked_by_the_operating_limit_parks_its_method() -> None:
    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        names = list(body["cmd"])
        blocked = {n for n in names if body["cmd"][n].startswith("crm.contact.update")}
        return ok(
            {
                "result": {n: True for n in names if n not in blocked},
                "result_error": {
                    n: {"error": "OPERATION_TIME_LIMIT", "error_description": "blocked"}
                    for n in blocked
                },
            }
        )

    client, portal, _ = make_client(handler)
    async with client:
        first = await client.batch(
            [
                Command("u", "crm.contact.update", {"ID": 1}),
                Command("g", "crm.contact.get", {"ID": 1}),
            ]
        )
        assert isinstance(first.errors["u"], OperationTimeLimit)
        second = await client.batch(
            [
                Command("u2", "crm.contact.update", {"ID": 2}),
                Command("g2", "crm.contact.get", {"ID": 2}),
            ]
        )
    assert isinstance(second.errors["u2"], OperationTimeLimit)
    assert second.ok("g2")
    assert list(portal.requests[1][1]["cmd"]) == ["g2"]  # the parked method was not sent


async def test_a_failed_request_gives_its_error_to_each_of_its_commands() -> None:
    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        if "w60" in body["cmd"]:
            return error(500, "INTERNAL_SERVER_ERROR", "boom")
        return batch_reply(body)

    client, portal, _ = make_client(handler)
    commands = [Command(f"w{i}", "crm.contact.update", {"ID": i}) for i in range(120)]
    async with client:
        batch = await client.batch(commands)
    assert len(portal.requests) == 3  # a write batch is not retried after a 500
    failed = {name for name, exc in batch.errors.items() if isinstance(exc, PortalUnavailable)}
    assert failed == {f"w{i}" for i in range(50, 100)}
    assert all(batch.ok(f"w{i}") for i in [*range(50), *range(100, 120)])


async def test_halt_stops_at_the_first_failed_chunk() -> None:
    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        names = list(body["cmd"])
        assert body["halt"] == 1
        if "c10" in names:
            return ok(
                {
                    "result": dict.fromkeys(names[:10], True),
                    "result_error": {"c10": {"error": "ERROR_CORE", "error_description": "no"}},
                }
            )
        return batch_reply(body)

    client, portal, _ = make_client(handler)
    async with client:
        batch = await client.batch(
            [Command(f"c{i}", "crm.lead.add", {"fields": {"TITLE": i}}) for i in range(120)],
            halt=True,
        )
    assert len(portal.requests) == 1
    assert sorted(batch.results) == sorted(f"c{i}" for i in range(10))
    assert list(batch.errors) == ["c10"]
    assert not batch.ok("c11")


async def test_batch_refuses_repeated_names_and_references_across_requests() -> None:
    client, portal, _ = make_client(lambda m, b: batch_reply(b))
    async with client:
        with pytest.raises(ValueError, match="repeated: a"):
            await client.batch([Command("a", "user.get"), Command("a", "user.get")])
        far = [Command(f"c{i}", "crm.contact.get", {"ID": i}) for i in range(50)]
        far.append(Command("late", "crm.contact.get", {"ID": "$result[c0][ID]"}))
        with pytest.raises(ValueError, match=r"\$result\[c0\]"):
            await client.batch(far)
    assert portal.requests == []


async def test_batch_commands_carry_php_encoded_params() -> None:
    client, portal, _ = make_client(lambda m, b: batch_reply(b))
    async with client:
        await client.batch(
            [
                Command(
                    "u", "crm.contact.update", {"ID": 3, "FIELDS": {"UF_A": None, "UF_B": [1, 2]}}
                )
            ]
        )
    method, _, query = portal.requests[0][1]["cmd"]["u"].partition("?")
    assert method == "crm.contact.update"
    assert parse_qsl(query, keep_blank_values=True) == [
        ("ID", "3"),
        ("FIELDS[UF_A]", ""),
        ("FIELDS[UF_B][0]", "1"),
        ("FIELDS[UF_B][1]", "2"),
    ]


# --- paging -------------------------------------------------------------------------------------


def paged(items: list[dict[str, Any]], id_field: str, items_key: str | None) -> Handler:
    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        assert body["start"] == -1
        assert body["order"] == {id_field: "ASC"}
        after = body["filter"].get(f">{id_field}", 0)
        page = [item for item in items if int(item[id_field]) > int(after)][:50]
        return ok(page if items_key is None else {items_key: page}, total=0)

    return handler


async def test_list_all_pages_past_the_last_id_seen() -> None:
    items = [{"id": i, "title": f"t{i}"} for i in range(1, 121)]
    client, portal, _ = make_client(paged(items, "id", "items"))
    params = {"entityTypeId": 1038, "filter": {"categoryId": 12}, "select": ["title"]}
    async with client:
        seen = [item async for item in client.list_all("crm.item.list", params)]
    assert seen == items
    filters = [body["filter"] for _, body in portal.requests]
    assert filters == [
        {"categoryId": 12},
        {"categoryId": 12, ">id": 50},
        {"categoryId": 12, ">id": 100},
    ]
    assert all(body["select"] == ["title", "id"] for _, body in portal.requests)


async def test_list_all_reads_plain_list_results_of_legacy_methods() -> None:
    items = [{"ID": str(i)} for i in range(1, 101)]
    client, portal, _ = make_client(paged(items, "ID", None))
    async with client:
        seen = [
            item
            async for item in client.list_all("crm.contact.list", id_field="ID", items_key=None)
        ]
    assert seen == items
    assert len(portal.requests) == 3  # 50, 50, then an empty page proves the end


async def test_list_all_refuses_another_order() -> None:
    client, _, _ = make_client(paged([], "id", "items"))
    async with client:
        with pytest.raises(ValueError, match="ascending"):
            async for _ in client.list_all("crm.item.list", {"order": {"id": "DESC"}}):
                pass


# --- the webhook secret -------------------------------------------------------------------------


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log line of the client and the budget (fresh loggers: cached ones would not be
    captured)."""
    with capture_logs() as captured:
        monkeypatch.setattr(client_module, "log", structlog.get_logger("client"))
        monkeypatch.setattr(budget_module, "log", structlog.get_logger("budget"))
        yield captured


async def test_the_webhook_url_appears_in_no_error_repr_or_log(
    logs: list[MutableMapping[str, Any]],
) -> None:
    def handler(method: str, body: dict[str, Any]) -> httpx.Response:
        if method == "crm.item.get":
            raise httpx.ConnectError(f"cannot connect to {BASE}{method}.json")
        if method == "crm.item.list":
            return error(503, "QUERY_LIMIT_EXCEEDED")
        return error(401, "NO_AUTH_FOUND", "Wrong authorization data")

    client, _, _ = make_client(handler, rate=Rate(per_second=100, burst=50), max_attempts=2)
    failures: list[Bitrix24Error] = []
    async with client:
        for method in ("crm.item.get", "crm.item.list", "crm.lead.add"):
            with pytest.raises(Bitrix24Error) as caught:
                await client.call(method, {"x": BASE})
            failures.append(caught.value)
        batch = await client.batch([Command("a", "crm.lead.add")])
        failures.extend(batch.errors.values())
    assert [type(f) for f in failures] == [
        PortalUnavailable,
        RateLimited,
        PermanentBitrix24Error,
        PermanentBitrix24Error,
    ]
    assert {line["event"] for line in logs} >= {"bitrix24_retry", "bitrix24_bucket_slowed"}
    texts = [str(f) for f in failures] + [repr(f) for f in failures] + [repr(client)]
    texts += [json.dumps(line, default=str) for line in logs]
    for text in texts:
        assert SECRET not in text
        assert "portal.example.com/rest/7" not in text
