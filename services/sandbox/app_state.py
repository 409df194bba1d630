"""What the registered application has on one portal, as saved in the portal's state file:
whether it is installed, its ``application_token``, its tokens, event bindings, widgets,
robots and their launches, and the offline event queue."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.sandbox.oauth import TokenBook
from services.sandbox.offline import OfflineQueue
from services.sandbox.robots import Launch, Robot

FEATURES = ("rest_offline_extended", "rest_auth_connector")


class EventBinding(BaseModel):
    """One ``event.bind``: online (a handler URL) or offline (no handler)."""

    id: int
    event: str
    handler: str = ""
    user_id: int = 0
    """``auth_type``: whose token the handler gets (0: the user who made the change)."""
    connector: str = ""
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.handler == ""

    def render(self) -> dict[str, Any]:
        """As ``event.get`` lists it."""
        if self.offline:
            return {"event": self.event, "connector_id": self.connector, "offline": 1}
        return {
            "event": self.event,
            "handler": self.handler,
            "auth_type": str(self.user_id),
            "offline": 0,
        }


class PlacementBinding(BaseModel):
    """One ``placement.bind``: a widget of the application in a place of the portal."""

    id: int
    placement: str
    handler: str
    user_id: int = 0
    title: str = ""
    description: str = ""
    group_name: str = ""
    options: dict[str, Any] = Field(default_factory=dict)
    lang_all: dict[str, dict[str, str]] = Field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        """As ``placement.get`` lists it."""
        return {
            "placement": self.placement,
            "userId": self.user_id,
            "handler": self.handler,
            "options": self.options,
            "title": self.title,
            "description": self.description,
            "langAll": self.lang_all,
        }


class AppSettings(BaseModel):
    """The portal's side of the application, steered by ``PUT /p/<name>/sandbox/app``."""

    model_config = ConfigDict(extra="forbid")

    license: str = "pro"
    """``app.info`` ``LICENSE_TYPE``; ``LICENSE_FAMILY`` is its leading letters (ent250: ent)."""
    status: str = Field(default="L", pattern="^[FDTPLS]$")
    """The application's status on the portal: L local, F free, P paid, T trial, D demo."""
    admins: list[int] = Field(default_factory=lambda: [1])
    """Users with administrator rights (the webhook's own user, 1, by default)."""
    features: dict[str, bool] = Field(default_factory=lambda: dict.fromkeys(FEATURES, True))
    """``feature.get`` answers: ``rest_offline_extended`` (``clear=0``) and
    ``rest_auth_connector`` (source keys)."""
    payment_required: bool = False
    """The token endpoint answers ``PAYMENT_REQUIRED`` for this portal."""
    language: str = "en"


class AppState(BaseModel):
    added: bool = False
    """The application is on the portal (its install page was opened, or it was installed)."""
    installed: bool = False
    """``BX24.installFinish()`` was called (or the installation completed by itself):
    ``app.info`` ``INSTALLED``; only then are events sent and widgets shown."""
    version: int = 1
    application_token: str | None = None
    installed_by: int | None = None
    last_id: int = 0
    bindings: list[EventBinding] = Field(default_factory=list)
    placements: list[PlacementBinding] = Field(default_factory=list)
    robots: list[Robot] = Field(default_factory=list)
    launches: list[Launch] = Field(default_factory=list)
    offline: OfflineQueue = Field(default_factory=OfflineQueue)
    tokens: TokenBook = Field(default_factory=TokenBook)
    settings: AppSettings = Field(default_factory=AppSettings)
    lifecycle: list[dict[str, Any]] = Field(default_factory=list)
    """Installs, finishes, updates and uninstalls, oldest first."""

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id
