"""Telegram alert for equipment detractors. Run: nps run examples.telegram_alert
(env: TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID; TELEGRAM_API_URL points tests at a local double)."""

import os

import httpx

from services.router.integration import rule_consumer
from shared.events import NpsScored
from shared.messaging import PermanentError


async def alert(event: NpsScored) -> None:
    a = event.answer
    text = f"NPS {a.score} for {a.product_name} (contact {a.contact_id}): {a.comment or '-'}"
    api = os.environ.get("TELEGRAM_API_URL", "https://api.telegram.org")
    token, chat = os.environ["TELEGRAM_BOT_TOKEN"], os.environ["TELEGRAM_CHAT_ID"]
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        reply = await client.post(f"/bot{token}/sendMessage", json={"chat_id": chat, "text": text})
    # Not raise_for_status(): its message holds the URL, and the URL holds the token.
    if reply.is_client_error and reply.status_code != 429:
        raise PermanentError(f"Telegram refused the alert: {reply.text}")  # to the DLQ at once
    if reply.is_error:
        raise ConnectionError(f"Telegram answered {reply.status_code}")  # retried, then the DLQ


consumer = rule_consumer("telegram_alert", "nps.scored.equipment.detractor", NpsScored, alert)
run = consumer.run
