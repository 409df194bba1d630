"""Operator tooling: dead-letter inspection and replay, the demo driver."""
