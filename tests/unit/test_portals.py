"""The portals a deployment serves (`shared/portals.py`): configurations, clients and what a
service builds per portal, for one portal and for several."""

from __future__ import annotations

import pytest

from shared.bitrix24 import Bitrix24Client, MemoryRateBudget
from shared.bitrix24.errors import PortalNotInstalled, PortalRevoked
from shared.messaging import DropMessage, PermanentError
from shared.portal_config import PortalConfig
from shared.portals import (
    PerPortal,
    PortalClients,
    PortalConfigs,
    PortalGoneError,
    UnknownPortalError,
)


def other(config: PortalConfig, timezone: str) -> PortalConfig:
    return config.model_copy(
        update={"portal": config.portal.model_copy(update={"timezone": timezone})}
    )


class Client(Bitrix24Client):
    closed = False

    async def aclose(self) -> None:
        await super().aclose()
        self.closed = True


def client(name: str) -> Client:
    return Client(f"https://{name}.example/rest/1/secret/", MemoryRateBudget(None))


def test_one_portal_serves_every_key(portal_config: PortalConfig) -> None:
    configs = PortalConfigs.one(portal_config)
    assert configs.get("m-alpha") is portal_config
    assert configs.get("default") is portal_config
    assert configs.only() is portal_config
    assert configs.keys() is None


def test_several_portals_each_its_own_and_no_other(portal_config: PortalConfig) -> None:
    alpha, beta = other(portal_config, "Europe/Moscow"), other(portal_config, "Asia/Almaty")
    configs = PortalConfigs({"m-alpha": alpha, "m-beta": beta})
    assert configs.get("m-alpha") is alpha
    assert configs.get("m-beta") is beta
    assert configs.keys() == ("m-alpha", "m-beta")
    with pytest.raises(UnknownPortalError, match=r"'m-gamma' is not served.*m-alpha, m-beta"):
        configs.get("m-gamma")
    assert issubclass(UnknownPortalError, PermanentError)  # dead-lettered, never retried
    with pytest.raises(ValueError, match="several portals"):
        configs.only()


def test_one_or_many_not_both(portal_config: PortalConfig) -> None:
    with pytest.raises(ValueError, match="either"):
        PortalConfigs({"m-alpha": portal_config}, every=portal_config)
    with pytest.raises(ValueError, match="either"):
        PortalConfigs()


def test_replace_a_reloaded_config(portal_config: PortalConfig) -> None:
    reloaded = other(portal_config, "Europe/Moscow")
    one = PortalConfigs.one(portal_config)
    one.replace(reloaded)
    assert one.get("m-alpha") is reloaded
    many = PortalConfigs({"m-alpha": portal_config, "m-beta": portal_config})
    with pytest.raises(ValueError, match="not reloaded"):
        many.replace(reloaded)
    assert many.get("m-beta") is portal_config


async def test_clients_by_portal_all_closed() -> None:
    alpha, beta = client("alpha"), client("beta")
    clients = PortalClients({"m-alpha": alpha, "m-beta": beta})
    assert clients.get("m-beta") is beta
    with pytest.raises(UnknownPortalError):
        clients.get("m-gamma")
    await clients.aclose()
    assert (alpha.closed, beta.closed) == (True, True)


async def test_one_client_for_the_one_portal() -> None:
    one = client("one")
    clients = PortalClients.one(one)
    assert clients.get("m-alpha") is one is clients.only()
    await clients.aclose()
    assert one.closed


def test_per_portal_builds_once_per_portal(portal_config: PortalConfig) -> None:
    built: list[str] = []

    def build(key: str) -> str:
        built.append(key)
        return f"writer of {key}"

    many = PerPortal(PortalConfigs({"m-alpha": portal_config, "m-beta": portal_config}), build)
    assert many.get("m-alpha") == "writer of m-alpha"
    assert many.get("m-beta") == "writer of m-beta"
    assert many.get("m-alpha") == "writer of m-alpha"
    assert built == ["m-alpha", "m-beta"]
    assert many.built() == ["writer of m-alpha", "writer of m-beta"]


def test_per_portal_of_one_portal_builds_one(portal_config: PortalConfig) -> None:
    built: list[str] = []

    def build(key: str) -> str:
        built.append(key)
        return f"writer of {key}"

    one = PerPortal(PortalConfigs.one(portal_config), build)
    assert one.get("m-alpha") == one.get("default") == "writer of m-alpha"
    assert built == ["m-alpha"]


def test_portals_added_and_taken_out_as_they_install_and_uninstall(
    portal_config: PortalConfig,
) -> None:
    configs = PortalConfigs({})
    assert configs.keys() == ()
    with pytest.raises(UnknownPortalError):
        configs.get("m-alpha")
    configs.put("m-alpha", portal_config)
    configs.put("m-beta", portal_config)
    assert configs.get("m-alpha") is portal_config
    assert configs.remove("m-beta", "uninstalled") is portal_config
    assert configs.keys() == ("m-alpha",)
    with pytest.raises(PortalGoneError, match="'m-beta' is uninstalled") as gone:
        configs.get("m-beta")
    assert isinstance(gone.value, DropMessage)  # dropped, not dead-lettered
    assert not isinstance(gone.value, PermanentError)
    # A call the portal refuses for want of tokens (uninstalled, revoked) is dropped too.
    assert issubclass(PortalNotInstalled, DropMessage)
    assert issubclass(PortalRevoked, PortalNotInstalled)
    configs.put("m-beta", portal_config)  # installed again
    assert configs.get("m-beta") is portal_config
    one = PortalConfigs.one(portal_config)
    with pytest.raises(ValueError, match="not added or removed"):
        one.put("m-alpha", portal_config)


def test_per_portal_rebuilds_from_a_replaced_configuration(portal_config: PortalConfig) -> None:
    configs = PortalConfigs({"m-alpha": portal_config, "m-beta": portal_config})
    per = PerPortal(configs, lambda key: (key, configs.get(key).portal.timezone))
    assert per.get("m-alpha") == ("m-alpha", portal_config.portal.timezone)
    beta = per.get("m-beta")
    configs.put("m-alpha", other(portal_config, "Asia/Almaty"))
    assert per.get("m-alpha") == ("m-alpha", "Asia/Almaty")
    assert per.get("m-beta") is beta  # untouched
    configs.remove("m-beta", "revoked")
    with pytest.raises(PortalGoneError, match="revoked"):
        per.get("m-beta")
