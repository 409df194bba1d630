"""A request's parameters as Bitrix24 reads them: the query string, then the body (a JSON
object, or form-urlencoded with PHP bracket keys)."""

import json
from typing import Any

from fastapi import Request

from services.sandbox.brackets import parse_query


async def read_params(request: Request) -> dict[str, Any]:
    """Query parameters, then the body: JSON object or form-urlencoded with PHP brackets.
    A body that cannot be read is a `ValueError` naming what is wrong."""
    params = parse_query(request.url.query)
    if request.method != "POST":
        return params
    raw = await request.body()
    if not raw.strip():
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Invalid JSON body: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        params.update(data)
    elif kind in ("application/x-www-form-urlencoded", ""):
        params.update(parse_query(raw.decode("utf-8", errors="replace")))
    else:
        raise ValueError(f"Unsupported Content-Type: {kind}")
    return params
