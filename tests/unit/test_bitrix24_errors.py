"""Error classification: every error fact of docs/bitrix24-client.md; secrets never in messages."""

import pytest

from shared.bitrix24.errors import (
    Bitrix24Error,
    NotFound,
    OperationTimeLimit,
    PermanentBitrix24Error,
    PortalUnavailable,
    RateLimited,
    TransientBitrix24Error,
    classify,
)
from shared.messaging import PermanentError

TABLE: list[tuple[int | None, str, str, type[Bitrix24Error]]] = [
    (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", RateLimited),
    (
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
        OperationTimeLimit,
    ),
    (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload.", PermanentBitrix24Error),
    (500, "INTERNAL_SERVER_ERROR", "Internal server error", PortalUnavailable),
    (500, "ERROR_UNEXPECTED_ANSWER", "Server returned an unexpected response.", PortalUnavailable),
    (401, "expired_token", "The access token provided has expired.", PermanentBitrix24Error),
    (401, "NO_AUTH_FOUND", "Wrong authorization data", PermanentBitrix24Error),
    (401, "METHOD_CONFIRM_WAITING", "Waiting for confirmation", PermanentBitrix24Error),
    (403, "METHOD_CONFIRM_DENIED", "Method call denied", PermanentBitrix24Error),
    (403, "insufficient_scope", "", PermanentBitrix24Error),
    (403, "INVALID_CREDENTIALS", "Invalid request credentials", PermanentBitrix24Error),
    (
        403,
        "ACCESS_DENIED",
        "REST API is available only on commercial plans.",
        PermanentBitrix24Error,
    ),
    (403, "user_access_error", "The application is restricted", PermanentBitrix24Error),
    (404, "ERROR_METHOD_NOT_FOUND", "Method not found!", PermanentBitrix24Error),
    (400, "INVALID_REQUEST", "Https required.", PermanentBitrix24Error),
    (400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", PermanentBitrix24Error),
    (405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed", PermanentBitrix24Error),
    (500, "PORTAL_DELETED", "Portal was deleted", PermanentBitrix24Error),
    (400, "ERROR_CORE", "Task title not specified", PermanentBitrix24Error),
    (400, "ERROR_ARGUMENT", "Argument 'id' is null or empty", PermanentBitrix24Error),
    (400, "INVALID_ARG_VALUE", "Invalid value for filter field", PermanentBitrix24Error),
    (400, "NOT_FOUND", "Element not found", NotFound),
    (400, "ACCESS_DENIED", "Access denied", PermanentBitrix24Error),
    (400, "", "Not found", NotFound),
    (400, "", "ID is not defined or invalid", PermanentBitrix24Error),
    (403, "WRONG_AUTH_TYPE", "Application context required", PermanentBitrix24Error),
]


@pytest.mark.parametrize(("status", "code", "description", "expected"), TABLE)
def test_every_documented_error_gets_its_class(
    status: int | None, code: str, description: str, expected: type[Bitrix24Error]
) -> None:
    error = classify("crm.item.get", code, description, status)
    assert type(error) is expected
    assert (error.method, error.code, error.status) == ("crm.item.get", code, status)


@pytest.mark.parametrize("code", ["query_limit_exceeded", "Query_Limit_Exceeded"])
def test_codes_are_compared_ignoring_case(code: str) -> None:
    assert isinstance(classify("batch", code, "", 503), RateLimited)


def test_an_unknown_5xx_is_the_portal_being_unavailable() -> None:
    assert isinstance(classify("crm.item.list", "SERVICE_UNAVAILABLE", "", 503), PortalUnavailable)
    assert isinstance(classify("crm.item.list", "", "Bad gateway", 502), PortalUnavailable)


def test_an_unknown_4xx_is_permanent() -> None:
    assert type(classify("crm.lead.add", "SOMETHING_NEW", "", 422)) is PermanentBitrix24Error


def test_a_429_without_the_code_is_still_the_operating_limit() -> None:
    error = classify("crm.item.list", "", "", 429, reset_at=1_700_000_600.0)
    assert isinstance(error, OperationTimeLimit)
    assert error.reset_at == 1_700_000_600.0


def test_batch_command_errors_have_no_status() -> None:
    assert type(classify("crm.contact.get", "", "Not found", None)) is NotFound
    assert type(classify("crm.item.add", "INTERNAL_SERVER_ERROR", "", None)) is PortalUnavailable
    assert type(classify("crm.item.add", "100", "Expected iterable value", None)) is (
        PermanentBitrix24Error
    )


def test_families_tell_the_consumer_what_to_do() -> None:
    for error in (classify("m", "QUERY_LIMIT_EXCEEDED", "", 503), classify("m", "", "", 500)):
        assert isinstance(error, TransientBitrix24Error)
        assert not isinstance(error, PermanentError)
    for error in (classify("m", "NO_AUTH_FOUND", "", 401), classify("m", "NOT_FOUND", "", 400)):
        assert isinstance(error, PermanentBitrix24Error)
        assert isinstance(error, PermanentError)  # so the consumer wrapper dead-letters it


def test_the_message_names_method_code_description_and_status() -> None:
    error = classify("crm.item.get", "NOT_FOUND", "Element not found", 400)
    assert str(error) == "crm.item.get: NOT_FOUND: Element not found (HTTP 400)"
    assert str(classify("crm.contact.get", "", "Not found", None)) == (
        "crm.contact.get: (no code): Not found"
    )


def test_a_webhook_url_inside_a_description_is_masked() -> None:
    error = PortalUnavailable(
        "crm.item.get",
        "NETWORK_ERROR",
        "ConnectError: https://portal.example/rest/1/s3cr3tk3y/crm.item.get.json",
        None,
    )
    assert "s3cr3tk3y" not in str(error)
    assert "s3cr3tk3y" not in repr(error)
    assert "/rest/1/***" in error.description


def test_the_operating_limit_message_says_until_when() -> None:
    error = OperationTimeLimit(
        "crm.item.list", "OPERATION_TIME_LIMIT", "blocked", 429, 1_700_000_600
    )
    assert str(error).endswith("parked until 1700000600")
