"""Several portals in one sandbox process: the default portal (at the root paths, webhook
mode, as always) and named portals under ``/p/<name>/``, each with its own data, ids,
``member_id``, domain, limits, faults, event handlers, call log and state file, all sharing the
sandbox's OAuth server (``oauth_server``) and its registered application."""

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.sandbox.limits import Limits
from services.sandbox.oauth import OAuthSettings
from services.sandbox.oauth_server import AppRegistration, OAuthServer
from services.sandbox.persistence import load_portal
from services.sandbox.portal import SandboxPortal
from services.sandbox.seed import seed_demo
from services.sandbox.timing import Clock

NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
NAME_RULE = "a lower-case letter, then up to 30 lower-case letters, digits or '-'"
ID_STEP = 1_000_000
ID_SLOTS = 1000


class PortalError(ValueError):
    """A portal that cannot be made: the message names the field."""


class PortalSpec(BaseModel):
    """A named portal to make (``--portal`` or ``POST /sandbox/portals``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern)
    seed: str | None = None
    """A portal YAML to build the demo portal from, or ``demo``; none: the sandbox's own seed
    (``--seed``), else an empty portal."""
    contacts: int = Field(default=300, ge=0, le=100_000)
    sales: int = Field(default=12, ge=0, le=1_000)
    limits: Limits | None = None
    domain: str | None = None


def named_member_id(name: str) -> str:
    """The ``member_id`` of the portal named ``name``: the same at every start."""
    return hashlib.sha256(f"b24-nps sandbox portal named {name}".encode()).hexdigest()[:32]


def named_domain(name: str) -> str:
    return f"{name}.sandbox.local"


def id_base(name: str, taken: set[int]) -> int:
    """Where the portal's ids start: a million-slot of its own, derived from its name (the
    next free slot if another portal has it), so that no two portals share a record id."""
    slot = 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % ID_SLOTS
    while slot * ID_STEP in taken:
        slot = slot % ID_SLOTS + 1
    return slot * ID_STEP


def state_file_for(state_file: Path | None, name: str) -> Path | None:
    """A named portal's state file next to the default one: ``sandbox.json`` ->
    ``sandbox.alpha.json``."""
    if state_file is None:
        return None
    return state_file.with_name(f"{state_file.stem}.{name}{state_file.suffix}")


PortalFactory = Callable[[PortalSpec, int, Path | None], SandboxPortal]
"""Builds a named portal from its spec, its id base and its state file."""


def portal_factory(
    *, seed: str | None, clock: Clock, seed_path: Callable[[str], Path]
) -> PortalFactory:
    """A factory for named portals: loaded from their state file when it exists, else new
    (seeded from the spec's ``seed``, else from ``seed``), each with its own member_id,
    domain and ids."""

    def build(spec: PortalSpec, base: int, state_file: Path | None) -> SandboxPortal:
        if state_file is not None and state_file.exists():
            return load_portal(state_file, limits=spec.limits, clock=clock)
        portal = SandboxPortal(
            member_id=named_member_id(spec.name),
            domain=spec.domain or named_domain(spec.name),
            limits=spec.limits,
            clock=clock,
        )
        portal.state.id_base = base
        chosen = spec.seed or seed
        if chosen is not None:
            number = int(hashlib.sha256(spec.name.encode()).hexdigest(), 16) % 1_000_000
            seed_demo(
                portal, seed_path(chosen), contacts=spec.contacts, seed=number, sales=spec.sales
            )
        return portal

    return build


@dataclass
class Host:
    """One portal of the sandbox and where it lives."""

    name: str | None
    portal: SandboxPortal
    state_file: Path | None = None
    seeded: bool = False
    saved_revision: int = field(default=-1)

    @property
    def prefix(self) -> str:
        return "" if self.name is None else f"/p/{self.name}"

    def describe(self, root: str) -> dict[str, Any]:
        base = f"{root}{self.prefix}"
        portal = self.portal
        described: dict[str, Any] = {
            "name": self.name,
            "url": f"{base}/",
            "member_id": portal.member_id,
            "domain": portal.domain,
            "webhook_url": f"{base}/rest/{portal.user_id}/{portal.secret}/",
            "state_file": str(self.state_file) if self.state_file else None,
        }
        if self.name is not None:
            described["client_endpoint"] = f"{base}/rest/"
            described["install_url"] = f"{base}/install"
            described["installed"] = portal.state.app.installed
        return described


class Sandbox:
    """Every portal of one process, and the OAuth server they share."""

    def __init__(
        self,
        default: SandboxPortal,
        *,
        registration: AppRegistration | None = None,
        oauth: OAuthSettings | None = None,
        base_url: str | None = None,
        factory: PortalFactory | None = None,
        state_file: Path | None = None,
        clock: Clock | None = None,
        new_token: Callable[[], str] | None = None,
    ) -> None:
        self.default = Host(None, default, state_file)
        self.server = OAuthServer(
            clock=clock or default.clock,
            registration=registration,
            settings=oauth,
            base_url=base_url,
            new_token=new_token,
        )
        self.named: dict[str, Host] = {}
        self.factory = factory or portal_factory(
            seed=None, clock=clock or default.clock, seed_path=Path
        )

    def add(
        self,
        spec: PortalSpec | str,
        *,
        portal: SandboxPortal | None = None,
        state_file: Path | None = None,
    ) -> Host:
        """Make (or take) the named portal and connect it to the OAuth server."""
        spec = PortalSpec(name=spec) if isinstance(spec, str) else spec
        name = spec.name
        if not NAME.match(name):
            raise PortalError(f"name: expected {NAME_RULE}, got {name!r}")
        if name in self.named:
            raise PortalError(f"name: a portal named {name!r} already runs")
        if state_file is None:
            state_file = state_file_for(self.default.state_file, name)
        if portal is None:
            taken = {host.portal.state.id_base for host in self.hosts()}
            portal = self.factory(spec, id_base(name, taken), state_file)
        portal.app.server = self.server
        portal.app.name = name
        self.server.sides[name] = portal.app
        host = Host(name, portal, state_file, seeded=bool(portal.state.survey))
        self.named[name] = host
        return host

    def get(self, name: str) -> Host | None:
        return self.named.get(name)

    def hosts(self) -> Iterator[Host]:
        yield self.default
        yield from self.named.values()

    def learn_base_url(self, base_url: str) -> None:
        """Where the sandbox is reached, from its first request, unless it was told."""
        if self.server.base_url is None:
            self.server.base_url = base_url.rstrip("/")
