"""The data layer's error for bad or unavailable training data, shared by ingestion and the store join."""

from __future__ import annotations


class IngestionError(ValueError):
    """The source cannot be read or the window is empty; the message says what to do."""
