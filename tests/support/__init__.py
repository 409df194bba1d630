"""Helpers the tests share; test modules import them from here, never from each other (the
`test-modules-private` import contract of pyproject.toml). Each module serves one part:
`servers`, `broker`, `clock`, `paths`, `ingest`, `scoring`, `router`, `crm_sync`, `dashboard`,
`cosmetics` (the customer's check of the cosmetics rule), `app` (the application's sandbox
set-up)."""

from tests.support.broker import Captured, capture, publish_raw, purge_core_queues
from tests.support.clock import T0, FakeClock
from tests.support.ingest import forget_served_portal, with_sales
from tests.support.servers import docker_available, reachable, serving

__all__ = [
    "T0",
    "Captured",
    "FakeClock",
    "capture",
    "docker_available",
    "forget_served_portal",
    "publish_raw",
    "purge_core_queues",
    "reachable",
    "serving",
    "with_sales",
]
