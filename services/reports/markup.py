"""Safe-by-construction HTML: every value becomes text unless it is already `Html`.

Pages are built with `el("td", {"class": "num"}, value)`: a plain `str` (or number) child and
every attribute value is escaped, so a comment holding `<script>` reaches the browser as text.
Only `Html` (what `el`, `join` and `escape` return) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape as _escape

VOID = frozenset({"br", "hr", "input", "meta"})

Attr = str | int | float | bool | None


class Html(str):
    """Markup that is already safe to send as is."""

    __slots__ = ()


def escape(value: object) -> Html:
    """`value` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    if isinstance(value, Html):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Html(value)  # digits, a sign, a dot, "e", "inf" or "nan": nothing to escape
    return Html(_escape(str(value), quote=True))


def _child(value: Html | str | int | float | None) -> str:
    if value is None:
        return ""
    return escape(value)


def _attrs(attrs: Mapping[str, Attr]) -> str:
    parts: list[str] = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {name}")
        else:
            parts.append(f' {name}="{escape(value)}"')
    return "".join(parts)


def el(
    tag: str,
    attrs: Mapping[str, Attr] | None = None,
    *children: Html | str | int | float | None,
) -> Html:
    """The element `<tag attrs>children</tag>` (no closing tag for void elements)."""
    opening = f"<{tag}{_attrs(attrs or {})}"
    if tag in VOID:
        return Html(opening + ">")
    return Html(f"{opening}>{''.join(_child(c) for c in children)}</{tag}>")


def join(parts: Iterable[Html | str | int | float | None]) -> Html:
    """The parts one after the other, each escaped unless it is `Html`."""
    return Html("".join(_child(part) for part in parts))
