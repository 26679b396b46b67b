"""Moved to ``consumers.inputs``; these names stay importable until every caller
(``consumers/runner.py``, some tests) imports them from there."""

from __future__ import annotations

from consumers.inputs import ImageLimits, RasterDocument, load_pages, open_document

__all__ = ["ImageLimits", "RasterDocument", "load_pages", "open_document"]
