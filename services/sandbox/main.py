"""Process wiring: build (or load) and seed the portals, register the application, then serve
them with uvicorn."""

import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from services.sandbox.app import LocalInbox, SalesClosing, create_app
from services.sandbox.limits import Limits
from services.sandbox.oauth import OAuthSettings
from services.sandbox.oauth_server import AppRegistration
from services.sandbox.persistence import load_portal
from services.sandbox.portal import SandboxPortal, seeded_member_id
from services.sandbox.portals import PortalSpec, Sandbox, portal_factory
from services.sandbox.seed import DEMO_CONFIG, seed_demo
from services.sandbox.smtp import DEFAULT_SMTP_PORT

_WEBHOOK_SECRET = re.compile(r"/rest/([^/]+)/[^/]+/")
_CREDENTIAL_PARAMS = re.compile(
    r"([?&](?:auth|access_token|refresh_token|code|client_secret|AUTH_ID|REFRESH_ID|APP_SID)=)"
    r"[^&\s\"]*"
)


class HideWebhookSecret(logging.Filter):
    """Masks credentials in access-log lines: the webhook secret in ``/rest/<user>/<secret>/``
    and tokens, codes and the client secret in query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _CREDENTIAL_PARAMS.sub(r"\1***", _WEBHOOK_SECRET.sub(r"/rest/\1/***/", arg))
                if isinstance(arg, str)
                else arg
                for arg in record.args
            )
        return True


def seed_config(seed: str) -> Path:
    """The portal YAML to seed from: a path as given, or for ``demo`` the YAML the pipeline
    reads (``$NPS_CONFIG``, else ``config/portal.yaml``) when it exists, so the sandbox has
    the fields the services expect; the example YAML otherwise."""
    if seed != "demo":
        return Path(seed)
    configured = Path(os.environ.get("NPS_CONFIG") or "config/portal.yaml")
    return configured if configured.is_file() else DEMO_CONFIG


def build_portal(
    *,
    seed: str | None = None,
    handlers: Sequence[str] = (),
    state_file: Path | None = None,
    limits: Limits | None = None,
    secret: str | None = None,
    app_token: str | None = None,
) -> SandboxPortal:
    """A portal loaded from ``state_file`` when it exists (its data wins over ``seed``), or a
    new one seeded from ``seed`` (see :func:`seed_config`), its ``member_id`` derived from
    ``seed`` (random without one).
    ``secret``/``app_token`` default to ``SANDBOX_SECRET``/``SANDBOX_APP_TOKEN``, then random."""
    secret = secret or os.environ.get("SANDBOX_SECRET") or None
    app_token = app_token or os.environ.get("SANDBOX_APP_TOKEN") or None
    if state_file is not None and state_file.exists():
        portal = load_portal(state_file, limits=limits, secret=secret, application_token=app_token)
    else:
        portal = SandboxPortal(
            secret=secret,
            application_token=app_token,
            member_id=None if seed is None else seeded_member_id(seed),
            limits=limits,
        )
        if seed is not None:
            seed_demo(portal, seed_config(seed))
    for url in handlers:
        portal.register_handler(url)
    return portal


def build_sandbox(
    portal: SandboxPortal,
    *,
    seed: str | None = None,
    portals: Sequence[str] = (),
    state_file: Path | None = None,
    limits: Limits | None = None,
    registration: AppRegistration | None = None,
    oauth: OAuthSettings | None = None,
    public_url: str | None = None,
) -> Sandbox:
    """The sandbox around the default ``portal``: the named ``portals`` (seeded from ``seed``
    like it, each with its own state file next to ``state_file``), the registered application
    and the OAuth server's lifetimes."""
    sandbox = Sandbox(
        portal,
        registration=registration,
        oauth=oauth,
        base_url=public_url,
        factory=portal_factory(seed=seed, clock=portal.clock, seed_path=seed_config),
        state_file=state_file,
    )
    for name in portals:
        sandbox.add(PortalSpec(name=name, limits=limits))
    return sandbox


def banner(
    portal: SandboxPortal,
    host: str,
    port: int,
    *,
    smtp_port: int | None = None,
    closing: SalesClosing | None = None,
    sandbox: Sandbox | None = None,
) -> str:
    base = f"http://{host}:{port}"
    webhook = f"{base}/rest/{portal.user_id}/{portal.secret}/"
    lines = [
        f"Sandbox Bitrix24 portal on {base}",
        f"  inbound webhook URL (BITRIX24_WEBHOOK_URL): {webhook}",
        f"  outgoing-event token (BITRIX24_APP_TOKEN):  {portal.application_token}",
        f"  member_id: {portal.member_id}",
        f"  inspect and control: {base}/sandbox/info, {base}/docs",
    ]
    if smtp_port is not None:
        where = "a free port (see /sandbox/info)" if smtp_port == 0 else f"{host}:{smtp_port}"
        lines.append(f"  local inbox: {base}/inbox, its SMTP server on {where}")
    if closing is not None:
        lines.append(f"  closing {closing.count} sale(s) every {closing.every_s:g} s")
    if sandbox is not None:
        root = sandbox.server.root
        for name, named in sandbox.named.items():
            lines.append(
                f"  portal {name}: {root}/p/{name}/ (member_id {named.portal.member_id});"
                f" install the application: {root}/p/{name}/install"
            )
        registration = sandbox.server.registration
        if registration is not None:
            lines.append(
                f"  application {registration.client_id}: OAuth server {root}/oauth/token/,"
                f" access tokens live {sandbox.server.settings.access_ttl_s:g} s"
            )
    return "\n".join(lines) + "\n"


def run(  # noqa: PLR0917 - positional signature agreed with the CLI and Makefile
    port: int = 8090,
    host: str = "127.0.0.1",
    seed: str | None = None,
    handler: list[str] | None = None,
    state_file: Path | None = None,
    limits: Limits | None = None,
    *,
    secret: str | None = None,
    app_token: str | None = None,
    smtp_port: int | None = DEFAULT_SMTP_PORT,
    closing: SalesClosing | None = None,
    portals: Sequence[str] = (),
    app: AppRegistration | None = None,
    oauth: OAuthSettings | None = None,
    public_url: str | None = None,
) -> None:
    """Build the portals, print their URLs and the webhook's event token, and serve until
    stopped; with ``smtp_port`` (0: any free port) the local inbox's SMTP server runs
    alongside, and with ``closing`` sales close on a timer. Named ``portals`` live under
    ``/p/<name>/``; ``app`` is the registered application of the OAuth server."""
    portal = build_portal(
        seed=seed,
        handlers=handler or (),
        state_file=state_file,
        limits=limits,
        secret=secret,
        app_token=app_token,
    )
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    sandbox = build_sandbox(
        portal,
        seed=seed,
        portals=portals,
        state_file=state_file,
        limits=limits,
        registration=app,
        oauth=oauth,
        public_url=public_url or f"http://{reachable}:{port}",
    )
    sys.stdout.write(
        banner(portal, host, port, smtp_port=smtp_port, closing=closing, sandbox=sandbox)
    )
    sys.stdout.flush()
    mail = LocalInbox(host=host if smtp_port is not None else None, port=smtp_port or 0)
    asgi = create_app(sandbox, state_file=state_file, mail=mail, closing=closing)
    config = uvicorn.Config(asgi, host=host, port=port)
    logging.getLogger("uvicorn.access").addFilter(HideWebhookSecret())
    uvicorn.Server(config).run()
