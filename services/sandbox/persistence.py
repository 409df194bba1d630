"""``--state-file``: the portal's data and credentials as JSON, so a demo survives a restart.
Call logs, limit counters, faults and event deliveries are runtime only."""

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from services.sandbox.limits import Limits
from services.sandbox.portal import SandboxPortal
from services.sandbox.state import PortalState
from services.sandbox.timing import Clock

FORMAT_VERSION = 1


def save_portal(portal: SandboxPortal, path: Path) -> None:
    """Write the snapshot atomically (a temporary file renamed over the old one)."""
    snapshot = {
        "version": FORMAT_VERSION,
        "credentials": {
            "user_id": portal.user_id,
            "secret": portal.secret,
            "application_token": portal.application_token,
            "member_id": portal.member_id,
            "domain": portal.domain,
        },
        "state": portal.state.model_dump(mode="json"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(snapshot, stream, ensure_ascii=False)
    Path(temporary).replace(path)


def load_portal(
    path: Path,
    *,
    limits: Limits | None = None,
    clock: Clock = time.time,
    **credentials: Any,
) -> SandboxPortal:
    """A portal from a snapshot; credentials given here (and not None) override saved ones."""
    snapshot = json.loads(path.read_text(encoding="utf-8"))
    if snapshot.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a sandbox state file (version {snapshot.get('version')})")
    saved = dict(snapshot["credentials"])
    saved.update({key: value for key, value in credentials.items() if value is not None})
    state = PortalState.model_validate(snapshot["state"])
    return SandboxPortal(limits=limits, state=state, clock=clock, **saved)
