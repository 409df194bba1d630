"""Dashboard pages read the way the tests check them: `figures(html)` takes every element with
`data-row` as a row and every `data-col` inside it as a figure (its text); `shown(row)` is how a
page shows the figures of an `/api/report` row, `shown_scores(rows)` its score distribution."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, dict[str, str]] = {}
        self._row: list[tuple[int, str]] = []
        self._col: tuple[int, str] | None = None
        self._text: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        self._depth += 1
        found = dict(attrs)
        if found.get("data-row") is not None:
            key = found["data-row"] or ""
            self._row.append((self._depth, key))
            self.rows.setdefault(key, {})
        if found.get("data-col") is not None and self._row:
            self._col = (self._depth, found["data-col"] or "")
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self._col is not None and self._col[0] == self._depth:
            self.rows[self._row[-1][1]][self._col[1]] = "".join(self._text).strip()
            self._col = None
        if self._row and self._row[-1][0] == self._depth:
            self._row.pop()
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self._text.append(data)


def figures(html: str) -> dict[str, dict[str, str]]:
    """{row key: {column: text shown}} of every `data-row` element of a page."""
    parser = _Figures()
    parser.feed(html)
    parser.close()
    return parser.rows


def shown(row: dict[str, Any]) -> dict[str, str]:
    """How a page shows the figures of an `/api/report` row."""
    unreliable = row["few_answers"] and row["nps"] is not None
    plural = "" if row["answers"] == 1 else "s"
    return {
        "nps": "—" if row["nps"] is None else f"{row['nps']:.1f}",
        "margin": "—" if row["margin"] is None else f"±{row['margin']:.1f}",
        **({"few_answers": f"unreliable: {row['answers']} answer{plural}"} if unreliable else {}),
        "promoters": str(row["promoters"]),
        "passives": str(row["passives"]),
        "detractors": str(row["detractors"]),
        "answers": str(row["answers"]),
        "avg_score": "—" if row["avg_score"] is None else f"{row['avg_score']:.2f}",
        **({"note": row["note"]} if row.get("note") else {}),
    }


def shown_scores(rows: list[dict[str, int]]) -> dict[str, str]:
    """How a page shows the score distribution of `/api/scores` rows: every score 0..10."""
    counts = {row["score"]: row["answers"] for row in rows}
    return {str(score): str(counts.get(score, 0)) for score in range(11)}
