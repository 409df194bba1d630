"""The survey page's own YAML (`SURVEY_CONFIG`, config/survey.example.yaml): the company's name
and logo, the scale's labels, the thank-you texts, the review links, a template directory.

`load_page_config()` validates the file and raises `ConfigError` naming each bad key. Texts left
out fall back to the built-in Russian and English ones (`views.TEXTS`).

A portal's own `survey_page` section (`shared/survey_page.py`) goes over it for that portal's
customers (`page_for`): its company name, logo, texts, review links and deal survey texts, each
the deployment's where the portal gives none.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.portal_config import ConfigError
from shared.survey_page import Logo, Reviews, SurveyPageSection, Texts, check_texts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Company(_Strict):
    name: str = Field(min_length=1, max_length=200)
    logo: Path | None = None
    """A PNG, SVG, JPEG or WebP file, served by the page itself (no third-party resources)."""


class PageConfig(_Strict):
    company: Company
    texts: Texts = Field(default_factory=dict)
    reviews: Reviews = Reviews()
    deal_texts: dict[str, Texts] = Field(default_factory=dict)
    """A deal survey's own texts (by its name in the portal YAML's `deal_surveys`), replacing
    `texts` on its pages."""
    templates: Path | None = None
    """A directory whose templates replace the built-in ones of the same name."""

    @model_validator(mode="after")
    def _known_texts(self) -> PageConfig:
        check_texts("texts", self.texts)
        for name, texts in self.deal_texts.items():
            check_texts(f"deal_texts.{name}", texts)
        return self


LOGO_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc or '(top level)'}: {error['msg']}"


def parse_page_config(data: Any, source: str) -> PageConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with company, texts and reviews keys")
    try:
        config = PageConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source} is invalid:\n{problems}") from None
    logo = config.company.logo
    if logo is not None and logo.suffix.lower() not in LOGO_TYPES:
        raise ConfigError(f"{source}: company.logo {logo} is not a {', '.join(LOGO_TYPES)} file")
    if logo is not None and not logo.is_file():
        raise ConfigError(f"{source}: company.logo {logo}: no such file")
    if config.templates is not None and not config.templates.is_dir():
        raise ConfigError(f"{source}: templates {config.templates}: no such directory")
    return config


@dataclass(frozen=True)
class SurveyPage:
    """What one portal's customers see: the page YAML with the portal's `survey_page` over it,
    and the logo (served at `logo.path`)."""

    config: PageConfig
    logo: Logo | None


@functools.cache
def _file_logo(path: Path) -> Logo:
    """The page YAML's logo file, read once by a process (its URL is its content's hash)."""
    return Logo(path.read_bytes(), LOGO_TYPES[path.suffix.lower()])


def _merged(base: Texts, own: Texts) -> Texts:
    return {lang: {**base.get(lang, {}), **own.get(lang, {})} for lang in {*base, *own}}


def page_for(page: PageConfig, section: SurveyPageSection | None) -> SurveyPage:
    """The page of a portal whose configuration has `section` (None: the deployment's page)."""
    logo = None if page.company.logo is None else _file_logo(page.company.logo)
    if section is None:
        return SurveyPage(page, logo)
    deal_texts = {
        name: _merged(page.deal_texts.get(name, {}), section.deal_texts.get(name, {}))
        for name in {*page.deal_texts, *section.deal_texts}
    }
    company = page.company.model_copy(update={"name": section.company.name or page.company.name})
    config = page.model_copy(
        update={
            "company": company,
            "texts": _merged(page.texts, section.texts),
            "reviews": section.reviews or page.reviews,
            "deal_texts": deal_texts,
        }
    )
    return SurveyPage(config, section.company.logo or logo)


def load_page_config(path: Path) -> PageConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (copy config/survey.example.yaml there or set SURVEY_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_page_config(data, str(path))
