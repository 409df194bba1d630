"""The survey page as the tests set it up: signing keys, the example page YAML, a `PageSetup`."""

from __future__ import annotations

from typing import Any

from services.survey.app import PageSetup
from services.survey.page_config import PageConfig, load_page_config
from services.survey.tokens import LinkSigner
from shared.events import Scale
from shared.portal_config import NpsSection, PortalConfig
from tests.support.paths import ROOT

KEYS = ["test-key"]
DAY = 86400
EXAMPLE_PAGE = ROOT / "config" / "survey.example.yaml"


def page_config(**changes: Any) -> PageConfig:
    data = load_page_config(EXAMPLE_PAGE).model_dump(mode="json")
    data.update(changes)
    return PageConfig.model_validate(data)


def setup_for(
    portal_config: PortalConfig,
    *,
    scale: Scale = "0-10",
    page: PageConfig | None = None,
    now: float = 1_800_000_000.0,
    rate: int = 1000,
) -> PageSetup:
    return PageSetup(
        portal=portal_config.model_copy(update={"nps": NpsSection(scale=scale)}),
        page=page or load_page_config(EXAMPLE_PAGE),
        signer=LinkSigner(KEYS, 30 * DAY, clock=lambda: now),
        secure=False,
        rate_per_minute=rate,
    )
