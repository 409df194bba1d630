"""Ingest: Bitrix24 events in, stored, published; items read and mapped to survey answers.

- `webhook` (pure): parses and checks incoming event and robot requests.
- `mapping` (pure): turns an NPS smart-process item into a `FormSubmitted` answer.
- `batching`: the stall-safe reader that packs concurrent reads by id into one request.
- `api`: the HTTP endpoints; `store`: PostgreSQL; `hydrator`: the `ingest.hydrate` consumer;
  `sweep`: the catch-up sweep; `main`: the process wiring; `commands`: `nps sweep`.
"""
