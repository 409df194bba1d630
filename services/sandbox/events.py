"""Outgoing events: what Bitrix24 POSTs to a registered handler, and the delivery record."""

from dataclasses import dataclass
from typing import Any, Literal

from services.sandbox.brackets import encode

SERVER_ENDPOINT = "https://oauth.bitrix.info/rest/"


def event_body(
    *,
    event: str,
    handler_id: int,
    entity_type_id: int,
    item_id: int,
    ts: int,
    domain: str,
    member_id: str,
    application_token: str,
) -> str:
    """The form-encoded body of an outgoing-webhook event, keys in Bitrix24's order."""
    return encode(
        {
            "event": event,
            "event_handler_id": handler_id,
            "data": event_data(event, entity_type_id, item_id),
            "ts": ts,
            "auth": {
                "domain": domain,
                "client_endpoint": f"https://{domain}/rest/",
                "server_endpoint": SERVER_ENDPOINT,
                "member_id": member_id,
                "application_token": application_token,
            },
        }
    )


def event_data(event: str, entity_type_id: int, item_id: int) -> dict[str, Any]:
    """An event's `data`: smart-process item events name the entity type, deal and lead events
    carry only `FIELDS[ID]`; a task event (`ONTASKUPDATE`) the id before and after the change
    (`FIELDS_BEFORE[ID]`, `FIELDS_AFTER[ID]`) and whether it was readable (not checked)."""
    if event.startswith("ONTASK"):
        return {
            "FIELDS_BEFORE": {"ID": str(item_id)},
            "FIELDS_AFTER": {"ID": str(item_id)},
            "IS_ACCESSIBLE_BEFORE": "undefined",
            "IS_ACCESSIBLE_AFTER": "undefined",
        }
    fields = {"ID": str(item_id)}
    if event.startswith("ONCRMDYNAMICITEM"):
        fields["ENTITY_TYPE_ID"] = str(entity_type_id)
    return {"FIELDS": fields}


@dataclass
class Delivery:
    """One event POST to one handler. Sent once; a failure is recorded, never retried."""

    id: int
    handler_id: int
    url: str
    event: str
    entity_type_id: int
    item_id: int
    body: str
    created: float
    status: Literal["pending", "delivered", "failed"] = "pending"
    http_status: int | None = None
    error: str | None = None
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "handler_id": self.handler_id,
            "url": self.url,
            "event": self.event,
            "entity_type_id": self.entity_type_id,
            "item_id": self.item_id,
            "body": self.body,
            "created": self.created,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "finished": self.finished,
        }
