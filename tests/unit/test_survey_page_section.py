"""A portal's `survey_page` (`shared/survey_page.py`), validated with its portal YAML: a logo is
an image itself (a PNG, JPEG or WebP `data:` URI, checked by its bytes, at most 64 KB), never a
file of the server; every problem named by its key. Over the page YAML (`page_for`) each part
left out is the deployment's."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
import yaml

from services.survey.page_config import page_for, parse_page_config
from shared.portal_config import ConfigError, parse_portal_config
from shared.survey_page import MAX_LOGO_BYTES, SurveyPageSection, parse_logo
from tests.support.paths import EXAMPLE_CONFIG

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24


def uri(media_type: str, content: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(content).decode()}"


@pytest.mark.parametrize(
    ("media_type", "content"),
    [("image/png", PNG), ("image/jpeg", JPEG), ("image/webp", WEBP)],
)
def test_a_logo_is_an_image_at_the_url_of_its_content(media_type: str, content: bytes) -> None:
    logo = parse_logo(uri(media_type, content))
    assert (logo.content, logo.media_type) == (content, media_type)
    assert logo.path == f"/logo/{hashlib.sha256(content).hexdigest()}"
    assert parse_logo(logo.data_uri()) == logo


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("/etc/passwd", "expected a data: URI"),
        ("https://cdn.example/logo.png", "expected a data: URI"),
        (uri("image/svg+xml", b"<svg/>"), "image type image/svg+xml is not accepted"),
        ("data:image/png;base64,not base64!", "not valid base64"),
        (uri("image/png", JPEG), "the bytes are not a image/png image"),
        (uri("image/webp", b"RIFF\x24\x00\x00\x00WAVEfmt "), "the bytes are not a image/webp"),
        (uri("image/png", PNG + b"\x00" * MAX_LOGO_BYTES), "the image is over 64 KB"),
        (42, "expected a data: URI"),
    ],
)
def test_anything_else_is_refused_naming_what_is_expected(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match="expected a data: URI of a image/png") as raised:
        parse_logo(value)
    assert problem in str(raised.value)


def portal_yaml(survey_page: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["survey_page"] = survey_page
    return data


def test_the_portal_yaml_names_each_bad_key_of_its_survey_page() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(
            portal_yaml(
                {
                    "company": {"logo": uri("image/svg+xml", b"<svg/>"), "slogan": "x"},
                    "reviews": {"show_to": "happy"},
                    "templates": "/srv/templates",
                }
            ),
            "portal alpha's configuration",
        )
    message = str(raised.value)
    assert message.startswith("portal alpha's configuration is invalid:")
    for key in (
        "survey_page.company.logo: Value error, image type image/svg+xml is not accepted",
        "survey_page.company.slogan: Extra inputs are not permitted",
        "survey_page.reviews.show_to: Input should be 'promoters' or 'everyone'",
        "survey_page.templates: Extra inputs are not permitted",
    ):
        assert key in message


def test_texts_and_deal_texts_are_checked_like_the_page_yamls() -> None:
    with pytest.raises(ConfigError, match=r"texts\.en: unknown key\(s\) sumbit"):
        parse_portal_config(portal_yaml({"texts": {"en": {"sumbit": "Go"}}}))
    with pytest.raises(ConfigError, match=r"texts\.ru\.question: placeholder \{name\} is not"):
        parse_portal_config(portal_yaml({"texts": {"ru": {"question": "{name}"}}}))
    # a text nothing is filled into is shown as written, braces and all
    shown = parse_portal_config(portal_yaml({"texts": {"ru": {"submit": "Send {name} :}"}}}))
    assert shown.survey_page is not None
    assert shown.survey_page.texts["ru"]["submit"] == "Send {name} :}"
    with pytest.raises(
        ConfigError,
        match=r"survey_page\.deal_texts\.Nope: no deal survey has this name \(deal surveys:"
        r" After the sale\)",
    ):
        parse_portal_config(portal_yaml({"deal_texts": {"Nope": {"en": {"submit": "Go"}}}}))


@pytest.mark.parametrize(
    ("texts", "where"),
    [
        ({"texts": {"en": {"question": "{company:>2000000000}"}}}, "texts.en.question"),
        ({"texts": {"ru": {"optout_text": "{company!r}"}}}, "texts.ru.optout_text"),
        (
            {"deal_texts": {"After the sale": {"en": {"optout_title": "{product.__doc__}"}}}},
            "deal_texts.After the sale.en.optout_title",
        ),
    ],
)
def test_a_portal_text_fills_in_bare_placeholders_only(texts: dict[str, Any], where: str) -> None:
    """A portal's administrator writes its texts: a format spec (gigabytes of padding on every
    render), a conversion or an attribute is refused when the configuration is saved."""
    with pytest.raises(ConfigError) as raised:
        parse_portal_config(portal_yaml(texts))
    assert f"survey_page: Value error, {where}: placeholder {{" in str(raised.value)
    assert "expected only {company} and {product}, with no format spec" in str(raised.value)


def test_over_the_page_yaml_each_part_left_out_is_the_deployments() -> None:
    page = parse_page_config(
        {
            "company": {"name": "Deployment"},
            "texts": {"en": {"submit": "Send", "comment": "Why?"}},
            "reviews": {"links": [{"name": "Ours", "url": "https://ours.example/"}]},
            "deal_texts": {"After the sale": {"en": {"question": "Deal?"}}},
        },
        "page",
    )
    section = SurveyPageSection.model_validate(
        {
            "company": {"logo": uri("image/png", PNG)},
            "texts": {"en": {"submit": "Go"}, "ru": {"submit": "Вперёд"}},
            "deal_texts": {"After the sale": {"en": {"comment": "Tell us"}}},
        }
    )
    merged = page_for(page, section)
    assert merged.config.company.name == "Deployment"
    assert merged.logo is not None
    assert merged.logo.content == PNG
    assert merged.config.texts == {
        "en": {"submit": "Go", "comment": "Why?"},
        "ru": {"submit": "Вперёд"},
    }
    assert merged.config.reviews == page.reviews
    assert merged.config.deal_texts == {
        "After the sale": {"en": {"question": "Deal?", "comment": "Tell us"}}
    }
    assert page_for(page, None).config == page
    assert page_for(page, None).logo is None
