"""What a command says when PostgreSQL or RabbitMQ cannot be used, instead of a traceback."""

from __future__ import annotations

import aiormq
import asyncpg

SERVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    aiormq.exceptions.AMQPError,
)
"""The errors of a server that is down, refuses the credentials or lacks a database/vhost."""


def server_problem(exc: BaseException) -> str:
    """One line naming the server behind `exc` (one of `SERVER_ERRORS`) and its setting."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"PostgreSQL refused ({detail}); see DATABASE_URL"
    if isinstance(exc, aiormq.exceptions.AMQPError):
        return f"RabbitMQ refused or did not answer ({detail}); see RABBITMQ_URL"
    return (
        f"cannot connect ({detail}); is the server at DATABASE_URL (PostgreSQL) or"
        " RABBITMQ_URL (RabbitMQ) running?"
    )
