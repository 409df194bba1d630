"""Dispatch: b24-nps asks customers itself (docs/dispatch.md)."""
