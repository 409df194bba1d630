"""The survey page's own YAML (`SURVEY_CONFIG`, config/survey.example.yaml): the company's name
and logo, the scale's labels, the thank-you texts, the review links, a template directory.

`load_page_config()` validates the file and raises `ConfigError` naming each bad key. Texts left
out fall back to the built-in Russian and English ones (`views.TEXTS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from shared.portal_config import ConfigError

TEXT_KEYS = (
    "question",
    "question_product",
    "comment",
    "service",
    "tested",
    "submit",
    "low",
    "high",
    "satisfied",
    "unsatisfied",
    "thanks_promoter",
    "thanks_passive",
    "thanks_detractor",
    "reviews",
    "optout_title",
    "optout_text",
    "optout_submit",
    "optout_done",
    "optout_link",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Company(_Strict):
    name: str = Field(min_length=1, max_length=200)
    logo: Path | None = None
    """A PNG, SVG, JPEG or WebP file, served by the page itself (no third-party resources)."""


class ReviewLink(_Strict):
    name: str = Field(min_length=1, max_length=100)
    url: HttpUrl


class Reviews(_Strict):
    show_to: Literal["promoters", "everyone"] = "promoters"
    """Google's review policy forbids asking only happy customers ("review gating"): with
    Google among the links, set `everyone`."""
    links: list[ReviewLink] = Field(default_factory=list)


class PageConfig(_Strict):
    company: Company
    texts: dict[Literal["ru", "en"], dict[str, str]] = Field(default_factory=dict)
    reviews: Reviews = Reviews()
    deal_texts: dict[str, dict[Literal["ru", "en"], dict[str, str]]] = Field(default_factory=dict)
    """A deal survey's own texts (by its name in the portal YAML's `deal_surveys`), replacing
    `texts` on its pages."""
    templates: Path | None = None
    """A directory whose templates replace the built-in ones of the same name."""

    @model_validator(mode="after")
    def _known_texts(self) -> PageConfig:
        _check_texts("texts", self.texts)
        for name, texts in self.deal_texts.items():
            _check_texts(f"deal_texts.{name}", texts)
        return self


def _check_texts(where: str, by_lang: dict[Literal["ru", "en"], dict[str, str]]) -> None:
    for lang, texts in by_lang.items():
        unknown = sorted(set(texts) - set(TEXT_KEYS))
        if unknown:
            raise ValueError(
                f"{where}.{lang}: unknown key(s) {', '.join(unknown)};"
                f" known: {', '.join(TEXT_KEYS)}"
            )
        for key, value in texts.items():
            try:
                value.format(company="", product="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{where}.{lang}.{key}: {exc!r} in {value!r}; only {{company}} and"
                    " {product} may be filled in (write {{ and }} for literal braces)"
                ) from None


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
