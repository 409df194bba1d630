"""The record pages a person opens from the dashboard's links: Bitrix24's own addresses of a
smart-process item (``/crm/type/<entity type>/details/<id>/``), of a deal
(``/crm/deal/details/<id>/``) and of a contact (``/crm/contact/details/<id>/``), here a plain
table of the record's fields, and for a deal what the portal keeps about it."""

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}


def _cell(value: Any) -> str:
    if value is None or value in ("", []):
        return "—"
    if isinstance(value, list):
        return escape(" | ".join(str(item) for item in value))
    return escape(str(value))


def record_page(
    title: str,
    fields: Mapping[str, Any],
    *,
    note: str = "",
    sections: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = (),
) -> str:
    """A record's fields as an HTML table, named by ``title``; then each section (a heading
    and its rows, one table with a column per key) — a deal's product rows, stage history,
    automation triggers, timeline."""
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{_cell(value)}</td></tr>" for name, value in fields.items()
    )
    paragraph = f"<p>{escape(note)}</p>" if note else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)} · Bitrix24 sandbox</title>"
        f"<h1>{escape(title)}</h1>{paragraph}<table>{rows}</table>"
        + "".join(_section(heading, items) for heading, items in sections)
        + "</html>"
    )


def _section(heading: str, items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return f"<h2>{escape(heading)}</h2><p>None.</p>"
    columns = list(dict.fromkeys(key for item in items for key in item))
    head = "".join(f"<th>{escape(str(column))}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(item.get(column))}</td>" for column in columns) + "</tr>"
        for item in items
    )
    return f"<h2>{escape(heading)}</h2><table><tr>{head}</tr>{body}</table>"
