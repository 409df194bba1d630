"""The record pages a person opens from the dashboard's links: Bitrix24's own addresses of a
smart-process item (``/crm/type/<entity type>/details/<id>/``) and of a contact
(``/crm/contact/details/<id>/``), here a plain table of the record's fields."""

from collections.abc import Mapping
from html import escape
from typing import Any

PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}


def _cell(value: Any) -> str:
    if value is None or value in ("", []):
        return "—"
    if isinstance(value, list):
        return escape(" | ".join(str(item) for item in value))
    return escape(str(value))


def record_page(title: str, fields: Mapping[str, Any], *, note: str = "") -> str:
    """A record's fields as an HTML table, named by ``title``."""
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{_cell(value)}</td></tr>" for name, value in fields.items()
    )
    paragraph = f"<p>{escape(note)}</p>" if note else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)} · Bitrix24 sandbox</title>"
        f"<h1>{escape(title)}</h1>{paragraph}<table>{rows}</table></html>"
    )
