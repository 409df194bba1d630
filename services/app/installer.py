"""The install and lifecycle of the application on a portal (docs/app.md): the install form and
`ONAPPINSTALL` store the portal's pair and `application_token` (through the token book, which
owns `bitrix24_app_portals`) and bind the events b24-nps needs; `ONAPPUNINSTALL`, proven by the
stored `application_token`, marks the portal uninstalled and erases its tokens; `ONAPPUPDATE` (a
new version: the portal dropped every binding) is taken like `ONAPPINSTALL` and binds again.

Neither a form nor an event is taken at its word for whose tokens it carries: the OAuth server's
`app.info` names the application and the portal an access token belongs to, and both must match;
and the user behind it must administer the portal (its `user.admin`: any user who opens the
application has a token of it). A portal already installed keeps its `application_token`
through the install form; its administrator's `ONAPPINSTALL` replaces it (an updated
application's portal sends a new one, which its `ONAPPUNINSTALL` then carries).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.app.lifecycle import (
    Binding,
    InstallForm,
    LifecycleError,
    LifecycleEvent,
    Placement,
    missing_bindings,
    missing_placements,
    pair_for,
    same_token,
)
from services.app.robot import Robots
from shared.bitrix24 import Bitrix24Client, PermanentBitrix24Error
from shared.bitrix24.tokens import TokenBook, TokenOwner
from shared.logging import get_logger

log = get_logger(__name__)

ClientFor = Callable[[str], Bitrix24Client]


@dataclass(frozen=True)
class Installer:
    """`book` keeps the portals; `client_for(member_id)` calls one in application mode;
    `bindings` are the event bindings every portal gets."""

    book: TokenBook
    client_id: str
    client_for: ClientFor
    bindings: Sequence[Binding]
    clock: Callable[[], float] = time.time
    robots: Robots | None = None
    """The robots every portal gets (services/app/robot.py), registered with the bindings."""
    placements: Sequence[Placement] = ()
    """The widgets every portal gets (the tabs of the reports app's frame in CRM cards)."""

    async def install(self, form: InstallForm) -> str:
        """The install page's form: the portal's first pair stored, its events bound. Returns
        the portal's domain as the OAuth server knows it."""
        owner = await self._owner(form.access_token, form.member_id, "AUTH_ID")
        domain = await self._store(
            owner,
            form.member_id,
            (form.access_token, form.refresh_token, form.expires_in),
            form.domain,
            form.application_token,
        )
        await self.bind(form.member_id)
        return domain

    async def installed(self, event: LifecycleEvent) -> None:
        """`ONAPPINSTALL`: the portal's `application_token` (and the event's pair, when it
        brings one) stored, its events bound. Verified as the portal's administrator's, it
        replaces a stored token (an updated application's portal has a new one)."""
        await self._take(event)
        await self.bind(event.member_id)

    async def updated(self, event: LifecycleEvent) -> None:
        """`ONAPPUPDATE`: a new version of the application on an installed portal, which
        dropped every binding, widget and robot and sends a new `application_token`. Verified
        exactly as `ONAPPINSTALL` (the installing administrator's token, of this application and
        this portal), its token (and pair) replaces the stored one, its version is recorded and
        everything is bound again."""
        self._verifiable(event)
        stored = await self.book.portal(event.member_id)
        if stored is None or stored.status != "installed":
            raise LifecycleError(
                "portal not installed",
                "auth[member_id]",
                "a portal the application is installed on",
                403,
            )
        await self._take(event)
        await self.bind(event.member_id)
        log.info("app_updated", member_id=event.member_id, version=event.version)

    def _verifiable(self, event: LifecycleEvent) -> str:
        if event.access_token is None:
            raise LifecycleError(
                f"{event.event} cannot be verified",
                "auth[access_token]",
                "the installing user's access token (the OAuth server names its portal)",
                401,
            )
        return event.access_token

    async def _take(self, event: LifecycleEvent) -> None:
        """The `application_token` (and pair) of a verified `ONAPPINSTALL` or `ONAPPUPDATE`
        stored, replacing the one stored, and its version recorded."""
        access_token = self._verifiable(event)
        owner = await self._owner(access_token, event.member_id, "auth[access_token]")
        if event.refresh_token is not None and event.expires_in is not None:
            await self._store(
                owner,
                event.member_id,
                (access_token, event.refresh_token, event.expires_in),
                event.domain,
                event.application_token,
                replace_token=True,
            )
        elif not await self.book.set_application_token(
            event.member_id, event.application_token, replace=True
        ):
            raise LifecycleError(
                f"{event.event} for a portal without tokens",
                "auth[refresh_token]",
                "the installing user's refresh token (no install form came before)",
                422,
            )
        if event.version is not None:
            await self.book.record_version(event.member_id, event.version)

    async def uninstalled(self, event: LifecycleEvent) -> None:
        """`ONAPPUNINSTALL`, accepted only with the portal's stored `application_token`."""
        stored = await self.book.portal(event.member_id)
        if stored is None or not same_token(stored.application_token, event.application_token):
            raise LifecycleError(
                "application token not accepted",
                "auth[application_token]",
                "the portal's token",
                403,
            )
        await self.book.uninstall(event.member_id)
        log.info(
            "app_uninstalled", member_id=event.member_id, domain=stored.domain, clean=event.clean
        )

    async def bind(self, member_id: str) -> list[Binding]:
        """Bind what `event.get` shows missing (so binding twice binds nothing), the widgets
        `placement.get` does not list and register the robots not registered yet; the bindings
        found missing (one bound meanwhile by a concurrent call, which the portal refuses as
        "already binded", counts as bound)."""
        async with self.client_for(member_id) as client:
            bound = (await client.call("event.get")).result
            missing = missing_bindings(self.bindings, bound if isinstance(bound, list) else [])
            for binding in missing:
                try:
                    await client.call("event.bind", binding.params())
                except PermanentBitrix24Error as exc:
                    if "already binded" not in exc.description.lower():
                        raise
            if self.placements:
                await self._place(client, member_id)
            if self.robots is not None:
                await self.robots.register(client, member_id)
        if missing:
            log.info(
                "app_events_bound",
                member_id=member_id,
                events=[b.event for b in missing],
                offline=[b.event for b in missing if b.handler is None],
            )
        return missing

    async def _place(self, client: Bitrix24Client, member_id: str) -> None:
        """Bind the widgets `placement.get` does not list; a refusal (no `placement` scope, a
        place the portal lacks) is logged with the portal's reason and the rest goes on."""
        try:
            listed = (await client.call("placement.get")).result
        except PermanentBitrix24Error as exc:
            log.warning("app_placement_refused", member_id=member_id, placement=None, code=exc.code)
            return
        placed = []
        for placement in missing_placements(
            self.placements, listed if isinstance(listed, list) else []
        ):
            try:
                await client.call("placement.bind", placement.params())
            except PermanentBitrix24Error as exc:
                if "already binded" not in exc.description.lower():
                    log.warning(
                        "app_placement_refused",
                        member_id=member_id,
                        placement=placement.placement,
                        code=exc.code,
                        reason=exc.description,
                    )
                    continue
            placed.append(placement.placement)
        if placed:
            log.info("app_placements_bound", member_id=member_id, placements=placed)

    async def _store(
        self,
        owner: TokenOwner,
        member_id: str,
        tokens: tuple[str, str, float],
        domain: str,
        application_token: str | None,
        *,
        replace_token: bool = False,
    ) -> str:
        """The portal's pair (`tokens`: access token, refresh token, seconds to expiry) stored
        as the OAuth server's `owner` of the access token describes it; the portal's domain
        (the OAuth server's, else `domain`). `replace_token`: an installed portal's stored
        `application_token` is replaced (`ONAPPINSTALL`), else kept (the install form)."""
        access_token, refresh_token, expires_in = tokens
        pair = pair_for(
            member_id,
            access_token,
            refresh_token,
            expires_in,
            client_endpoint=owner.client_endpoint,
            scope=owner.scope,
            now=self.clock(),
        )
        domain = owner.domain or domain
        await self.book.install(
            pair, domain=domain, application_token=application_token, replace_token=replace_token
        )
        return domain

    async def _owner(self, access_token: str, member_id: str, field: str) -> TokenOwner:
        try:
            owner = await self.book.oauth.token_owner(access_token)
        except PermanentBitrix24Error:
            raise LifecycleError(
                "token not accepted by the OAuth server",
                field,
                "a token the OAuth server issued to this application",
                401,
            ) from None
        if owner.client_id != self.client_id:
            raise LifecycleError(
                "token of another application", field, "a token of this application", 403
            )
        if owner.member_id != member_id:
            raise LifecycleError(
                "token of another portal", field, f"a token of portal {member_id}", 403
            )
        if not await self.book.oauth.is_admin(owner, access_token):
            raise LifecycleError(
                "not a portal administrator",
                field,
                "the token of an administrator of the portal (only one installs the application)",
                403,
            )
        return owner
