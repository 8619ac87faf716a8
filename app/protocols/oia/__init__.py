"""Operator Integration API v2.49: wire format, handler, wallet calls, late-retry guard."""
