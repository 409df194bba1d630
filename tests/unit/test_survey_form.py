"""The survey form read into an answer, its category, the page's options and the limits."""

from __future__ import annotations

import re

import pytest

from services.survey.form import (
    MAX_BODY_BYTES,
    Answer,
    FormError,
    answer_category,
    draft_answer,
    parse_body,
    read_answer,
)
from services.survey.limits import WindowLimiter
from services.survey.page_config import PageConfig
from services.survey.views import TEXTS, page_questions, pick_language, scale_options, show_reviews
from shared.events import Scale
from shared.portal_config import Product

LASER = [Product(sku="EQ-LASER-A", name="Laser A")]
COSMETICS = [
    Product(sku="COS-SERUM", name="Serum"),
    Product(sku="COS-CREAM", name="Day cream"),
    Product(sku="COS-MASK", name="Mask"),
]


@pytest.mark.parametrize(
    ("body", "scale", "expected"),
    [
        (b"score=9", "0-10", Answer({"EQ-LASER-A": 9})),
        (b"score=0&service=1", "0-10", Answer({"EQ-LASER-A": 0}, service_request=True)),
        (b"score=10&comment=+Fine+", "1-10", Answer({"EQ-LASER-A": 10}, comment="Fine")),
        (b"score=1", "binary", Answer({"EQ-LASER-A": 1})),
        (b"score=3&score=9&unknown=x", "0-10", Answer({"EQ-LASER-A": 3})),
        (b"score=4&comment=%0D%0A", "0-10", Answer({"EQ-LASER-A": 4})),
    ],
)
def test_equipment_answers(body: bytes, scale: Scale, expected: Answer) -> None:
    assert read_answer(parse_body(body), LASER, scale, cosmetics=False) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"score_0=9&tested_0=1", {"COS-SERUM": 9}),
        (b"tested_1=1", {"COS-CREAM": None}),
        (b"score_2=3", {"COS-MASK": 3}),
        (b"score_0=10&tested_1=on&score_2=6", {"COS-SERUM": 10, "COS-CREAM": None, "COS-MASK": 6}),
        (b"score_0=&tested_0=1&score_7=9", {"COS-SERUM": None}),
    ],
)
def test_cosmetics_answers(body: bytes, expected: dict[str, int | None]) -> None:
    answer = read_answer(parse_body(body), COSMETICS, "0-10", cosmetics=True)
    assert answer.scores == expected
    assert answer.tested == list(expected)
    assert not answer.service_request


@pytest.mark.parametrize(
    ("body", "scale", "cosmetics", "code"),
    [
        (b"", "0-10", False, "no_score"),
        (b"score=11", "0-10", False, "score"),
        (b"score=0", "1-10", False, "score"),
        (b"score=2", "binary", False, "score"),
        (b"score=-1", "0-10", False, "score"),
        (b"score=%D9%A3", "0-10", False, "score"),  # an Arabic-Indic digit
        (b"score=+9", "0-10", False, "score"),
        (b"score=009", "0-10", False, "score"),
        (b"score=5&comment=" + b"x" * 2001, "0-10", False, "comment"),
        (b"score=5&comment=%00", "0-10", False, "malformed"),
        (b"score=\xff", "0-10", False, "malformed"),
        (b"tested_0=0", "0-10", True, "no_product"),
        (b"score_0=12", "0-10", True, "score"),
        (b"x" * (MAX_BODY_BYTES + 1), "0-10", False, "too_large"),
    ],
)
def test_bad_forms_name_the_problem(body: bytes, scale: Scale, cosmetics: bool, code: str) -> None:
    products = COSMETICS if cosmetics else LASER
    with pytest.raises(FormError) as raised:
        read_answer(parse_body(body), products, scale, cosmetics=cosmetics)
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("scores", "scale", "category"),
    [
        ({"A": 9}, "0-10", "promoter"),
        ({"A": 8}, "0-10", "passive"),
        ({"A": 6}, "1-10", "detractor"),
        ({"A": 1}, "binary", "promoter"),
        ({"A": 0}, "binary", "detractor"),
        ({"A": 10, "B": 7, "C": None}, "0-10", "passive"),
        ({"A": None}, "0-10", None),
    ],
)
def test_the_answer_category_is_its_lowest_score(
    scores: dict[str, int | None], scale: Scale, category: str | None
) -> None:
    assert answer_category(Answer(scores), scale) == category


@pytest.mark.parametrize(
    ("scale", "values"),
    [("0-10", list(range(11))), ("1-10", list(range(1, 11))), ("binary", [1, 0])],
)
def test_scale_options(scale: Scale, values: list[int]) -> None:
    options = scale_options(scale, TEXTS["en"], chosen=values[-1])
    assert [o.value for o in options] == values
    assert [o.checked for o in options] == [False] * (len(values) - 1) + [True]


def test_binary_labels_come_from_the_texts() -> None:
    labels = [o.label for o in scale_options("binary", {**TEXTS["en"], "satisfied": "Yes!"}, None)]
    assert labels == ["Yes!", "Not satisfied"]


def test_the_previous_answer_wins_over_the_links_preselected_score() -> None:
    previous = Answer({"EQ-LASER-A": 4})
    [fresh] = page_questions(
        LASER, "0-10", TEXTS["en"], cosmetics=False, company="C", previous=None, preselect=9
    )
    [changed] = page_questions(
        LASER, "0-10", TEXTS["en"], cosmetics=False, company="C", previous=previous, preselect=9
    )
    assert [o.value for o in fresh.options if o.checked] == [9]
    assert [o.value for o in changed.options if o.checked] == [4]
    assert "Laser A" in fresh.legend


@pytest.mark.parametrize(
    ("show_to", "links", "category", "shown"),
    [
        ("promoters", True, "promoter", True),
        ("promoters", True, "passive", False),
        ("promoters", True, "detractor", False),
        ("everyone", True, "detractor", True),
        ("everyone", False, "promoter", False),
    ],
)
def test_review_links(show_to: str, links: bool, category: str, shown: bool) -> None:
    config = PageConfig.model_validate(
        {
            "company": {"name": "C"},
            "reviews": {
                "show_to": show_to,
                "links": [{"name": "2GIS", "url": "https://2gis.ru/x"}] if links else [],
            },
        }
    )
    assert show_reviews(config, category) is shown  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "lang"), [(None, "ru"), ("en-US,en;q=0.9", "en"), ("ru,en", "ru"), ("de", "ru")]
)
def test_pick_language(header: str | None, lang: str) -> None:
    assert pick_language(header) == lang


def test_window_limiter_counts_per_key_and_window() -> None:
    now = [0.0]
    limiter = WindowLimiter(2, clock=lambda: now[0])
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a")] == [True, True, False]
    assert limiter.allow("b")
    now[0] = 60.0
    assert limiter.allow("a")


@pytest.mark.parametrize(
    ("body", "cosmetics", "expected"),
    [
        (b"comment=Hello&service=1", False, Answer({}, service_request=True, comment="Hello")),
        (b"score=42&comment=x", False, Answer({}, comment="x")),
        (b"score=7", False, Answer({"EQ-LASER-A": 7})),
        (
            b"tested_0=1&score_1=99&score_2=4",
            True,
            Answer({"COS-SERUM": None, "COS-MASK": 4}, tested=["COS-SERUM", "COS-MASK"]),
        ),
    ],
)
def test_a_refused_form_keeps_what_was_entered(
    body: bytes, cosmetics: bool, expected: Answer
) -> None:
    products = COSMETICS if cosmetics else LASER
    assert draft_answer(parse_body(body), products, "0-10", cosmetics=cosmetics) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Rate {product}", None),
        ("Rate {{us}} at {company}", None),
        ("{company} and {product}, {{literal}}", None),
        ("Rate {name}", "placeholder {name} is not accepted"),
        ("Rate {0}", "placeholder {0} is not accepted"),
        ("Rate {}", "placeholder {} is not accepted"),
        ("Rate {company:>2000000000}", "placeholder {company:>2000000000} is not accepted"),
        ("Rate {product:{company}}", "placeholder {product:{company}} is not accepted"),
        ("Rate {company!r}", "placeholder {company!r} is not accepted"),
        ("Rate {company.__class__}", "placeholder {company.__class__} is not accepted"),
        ("Rate {product[0]}", "placeholder {product[0]} is not accepted"),
        (
            "Rate {company:" + "x" * 100 + "}",
            "placeholder {company:" + "x" * 49 + "...} is not accepted",
        ),
        ("Rate {", "Single '{' encountered in format string"),
        ("Rate }", "Single '}' encountered in format string"),
    ],
)
def test_texts_may_fill_in_bare_company_and_product_only(text: str, problem: str | None) -> None:
    data = {"company": {"name": "C"}, "texts": {"en": {"question": text}}}
    if problem is None:
        PageConfig.model_validate(data)
        return
    with pytest.raises(ValueError, match=re.escape(f"texts.en.question: {problem}; expected")):
        PageConfig.model_validate(data)
