"""The Bitrix24 REST client and the portal's shared rate budget (docs/bitrix24-client.md).

```python
client = client_from_settings(settings, pool, config)
async with client:
    resp = await client.call("crm.item.get", {"entityTypeId": 1038, "id": 5})
    batch = await client.batch([Command("c1", "crm.contact.get", {"ID": 7})])
    async for item in client.list_all("crm.item.list", {"entityTypeId": 1038}):
        ...
client = app_client(pool, token_book, member_id, config)  # an installed application portal
```
"""

from shared.bitrix24.budget import MemoryRateBudget, PgRateBudget, RateBudget
from shared.bitrix24.client import (
    BatchResponse,
    Bitrix24Client,
    Command,
    Response,
    app_client,
    client_from_settings,
    is_read_method,
    portal_key,
)
from shared.bitrix24.errors import (
    Bitrix24Error,
    NotFound,
    OperationTimeLimit,
    PermanentBitrix24Error,
    PortalNotInstalled,
    PortalRevoked,
    PortalUnavailable,
    RateLimited,
    TransientBitrix24Error,
)

__all__ = [
    "BatchResponse",
    "Bitrix24Client",
    "Bitrix24Error",
    "Command",
    "MemoryRateBudget",
    "NotFound",
    "OperationTimeLimit",
    "PermanentBitrix24Error",
    "PgRateBudget",
    "PortalNotInstalled",
    "PortalRevoked",
    "PortalUnavailable",
    "RateBudget",
    "RateLimited",
    "Response",
    "TransientBitrix24Error",
    "app_client",
    "client_from_settings",
    "is_read_method",
    "portal_key",
]
