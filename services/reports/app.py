"""The read-only reports app: NPS reports as JSON (`GET /api/report`), for people and dashboards.

`GET /api/report?by=product&period=month&segment=Cosmetics&from=2024-01-01&to=2024-06-30` takes
the same parameters as `nps report` (`by`, `period`, `from`, `to`, `segment`, `product`,
`manager`, `portal`) and answers the same list of rows as `nps report --json`. With a token
configured, `/api/*` needs `Authorization: Bearer <token>` (401 otherwise). `GET /healthz` is open.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from pydantic import ValidationError

from services.scoring.periods import Period
from services.scoring.report import GroupBy, ReportQuery, run_report
from shared.db import create_pool


def bearer_guard(token: str | None) -> Any:
    """A dependency that accepts a request only with `Authorization: Bearer <token>`."""

    async def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token (Authorization: Bearer <REPORTS_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


async def report_endpoint(
    request: Request,
    *,
    by: GroupBy = "product",
    period: Period | None = None,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
    segment: str | None = None,
    product: str | None = None,
    manager: int | None = None,
    portal: str | None = None,
) -> list[dict[str, Any]]:
    """NPS report rows (see `nps report`)."""
    try:
        query = ReportQuery(
            by=by,
            period=period,
            date_from=date_from,
            date_to=date_to,
            segment=segment,
            product=product,
            manager=manager,
            portal=portal,
        )
    except ValidationError as exc:
        detail = [
            {
                "field": ".".join(str(p) for p in err["loc"]).replace("date_", "") or "query",
                "problem": err["msg"],
            }
            for err in exc.errors(include_url=False)
        ]
        raise HTTPException(status_code=422, detail=detail) from None
    async with request.app.state.pool.acquire() as conn:
        rows = await run_report(conn, query)
    return [row.as_dict() for row in rows]


def create_app(database_url: str, token: str | None = None) -> FastAPI:
    """The reports app on the database at `database_url`; `token` protects `/api/*` when set."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(database_url, max_size=5)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="b24-nps reports", lifespan=lifespan)
    api = APIRouter(prefix="/api", dependencies=[Depends(bearer_guard(token))])
    api.add_api_route("/report", report_endpoint, methods=["GET"])
    app.include_router(api)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
