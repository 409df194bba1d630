"""Who a manager is: the name of a `user.get` row."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.users import user_name


@pytest.mark.parametrize(
    ("user", "name"),
    [
        ({"ID": "31", "NAME": "Anna", "LAST_NAME": "Petrova"}, "Anna Petrova"),
        ({"ID": "32", "NAME": " Dmitry ", "LAST_NAME": ""}, "Dmitry"),
        ({"ID": "33", "NAME": None, "LAST_NAME": "Volkova"}, "Volkova"),
        ({"ID": "34", "NAME": "", "LAST_NAME": "", "EMAIL": "x@y.z"}, None),
        ({"ID": "35"}, None),
        (None, None),
    ],
)
def test_a_users_name(user: dict[str, Any] | None, name: str | None) -> None:
    assert user_name(user) == name
