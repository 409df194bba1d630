"""The `survey_page` section of a portal's configuration (docs/survey.md, "Each portal's page"):
the company's name and logo, the texts, the review links and a deal survey's texts the survey
page shows to that portal's customers, each falling back to the deployment's page YAML
(`SURVEY_CONFIG`) when left out.

It is validated with the rest of the portal YAML (`nps config check`, a portal's settings page),
each problem named by its key. A portal's configuration may be written by that portal's
administrator, so nothing in it names a file or a directory of the server: the logo is the image
itself, a `data:` URI of a PNG, JPEG or WebP image (its bytes checked against the type) of at
most `MAX_LOGO_BYTES`, which the page serves at a URL of its content hash (`Logo.path`).

The texts' keys, the review links and their checks are the page YAML's too
(`services/survey/page_config.py` imports them from here).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from string import Formatter
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

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
MAX_LOGO_BYTES = 64 * 1024
"""A portal's logo, decoded (its configuration is saved through a form of at most 256 KB)."""
LOGO_PATH = "/logo"
"""Where the survey page serves a logo: `<LOGO_PATH>/<sha256 of its bytes>`."""
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}
"""The image types a portal's logo may be, with the bytes each starts with (no SVG: an image
that can carry script never comes from a portal)."""

Texts = dict[Literal["ru", "en"], dict[str, str]]


@dataclass(frozen=True)
class Logo:
    """A logo's bytes and type; served at `path`, the same URL for the same image."""

    content: bytes = field(repr=False)
    media_type: str
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.content).hexdigest())

    @property
    def path(self) -> str:
        return f"{LOGO_PATH}/{self.sha256}"

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.content).decode('ascii')}"


def parse_logo(value: object) -> Logo:
    """A portal's logo from its `data:<type>;base64,<bytes>` URI; `ValueError` naming what is
    expected otherwise."""
    if isinstance(value, Logo):
        return value
    expected = (
        f"expected a data: URI of a {', '.join(IMAGE_SIGNATURES)} image of at most"
        f" {MAX_LOGO_BYTES // 1024} KB (data:image/png;base64,...)"
    )
    if not isinstance(value, str):
        raise ValueError(expected)  # noqa: TRY004 - pydantic reports a ValueError as the field's
    head, comma, payload = value.strip().partition(",")
    media_type = head.removeprefix("data:").removesuffix(";base64")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError(expected)
    if media_type not in IMAGE_SIGNATURES:
        raise ValueError(f"image type {media_type or '(none)'} is not accepted; {expected}")
    if len(payload) > (MAX_LOGO_BYTES // 3 + 1) * 4 + 64:
        raise ValueError(f"the image is over {MAX_LOGO_BYTES // 1024} KB; {expected}")
    try:
        content = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the image is not valid base64; {expected}") from None
    if len(content) > MAX_LOGO_BYTES:
        raise ValueError(f"the image is over {MAX_LOGO_BYTES // 1024} KB; {expected}")
    signature = IMAGE_SIGNATURES[media_type]
    webp = media_type != "image/webp" or content[8:12] == b"WEBP"
    if not (content.startswith(signature) and webp):
        raise ValueError(f"the bytes are not a {media_type} image; {expected}")
    return Logo(content, media_type)


LogoUri = Annotated[Logo, PlainValidator(parse_logo), PlainSerializer(Logo.data_uri)]


TEXT_PLACEHOLDERS = ("company", "product")
"""What a text may fill in, bare: a portal's administrator writes its texts, so a format spec
(`{company:>2000000000}` would take gigabytes on every page), a conversion or an attribute or
index is refused."""
FILLED_KEYS = ("question", "question_product", "optout_title", "optout_text", "optout_done")
"""The texts `TEXT_PLACEHOLDERS` are filled into; the others are shown as written."""


def _text_problem(value: str) -> str | None:
    """Why `value` is not a text filling in only bare `{company}` and `{product}` (None: it is)."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in Formatter().parse(value)
            if name is not None
        ]
    except ValueError as exc:
        return str(exc)
    for name, spec, conversion in fields:
        if name not in TEXT_PLACEHOLDERS or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            if len(shown) > 60:
                shown = shown[:57] + "..."
            return f"placeholder {{{shown}}} is not accepted"
    return None


def check_texts(where: str, by_lang: Texts) -> None:
    """Every text key known and every text of `FILLED_KEYS` filling in bare `{company}` and
    `{product}` only."""
    for lang, texts in by_lang.items():
        unknown = sorted(set(texts) - set(TEXT_KEYS))
        if unknown:
            raise ValueError(
                f"{where}.{lang}: unknown key(s) {', '.join(unknown)};"
                f" known: {', '.join(TEXT_KEYS)}"
            )
        for key, value in texts.items():
            problem = _text_problem(value) if key in FILLED_KEYS else None
            if problem is not None:
                raise ValueError(
                    f"{where}.{lang}.{key}: {problem}; expected only {{company}} and {{product}},"
                    " with no format spec, conversion, attribute or index (write {{ and }} for"
                    " literal braces)"
                )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReviewLink(_Strict):
    name: str = Field(min_length=1, max_length=100)
    url: HttpUrl


class Reviews(_Strict):
    show_to: Literal["promoters", "everyone"] = "promoters"
    """Google's review policy forbids asking only happy customers ("review gating"): with
    Google among the links, set `everyone`."""
    links: list[ReviewLink] = Field(default_factory=list)


class PageCompany(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    logo: LogoUri | None = None


class SurveyPageSection(_Strict):
    """What this portal's customers see on the survey page; anything left out is the
    deployment's (its page YAML)."""

    company: PageCompany = PageCompany()
    texts: Texts = Field(default_factory=dict)
    reviews: Reviews | None = None
    deal_texts: dict[str, Texts] = Field(default_factory=dict)
    """A deal survey's own texts (by its name in `deal_surveys`)."""

    @model_validator(mode="after")
    def _known_texts(self) -> SurveyPageSection:
        check_texts("texts", self.texts)
        for name, texts in self.deal_texts.items():
            check_texts(f"deal_texts.{name}", texts)
        return self
