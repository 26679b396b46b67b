"""OCR engines behind one small protocol; ``build_engine`` picks one from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumers.engines.base import (
    EngineHealth,
    OcrEngine,
    PageEvent,
    PageListener,
    PageRequest,
    PageResult,
    StreamRestarted,
    TextDelta,
)
from consumers.errors import ConfigurationError
from schemas import PageStatus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from consumers.settings import Settings

__all__ = [
    "EngineHealth",
    "OcrEngine",
    "PageEvent",
    "PageListener",
    "PageRequest",
    "PageResult",
    "PageStatus",
    "StreamRestarted",
    "TextDelta",
    "build_engine",
]


def build_engine(settings: Settings, registry: CollectorRegistry) -> OcrEngine:
    """The engine ``OCR_ENGINE`` names; heavy imports happen only for the one chosen."""
    if settings.engine == "tesseract":
        from consumers.engines.tesseract import TesseractEngine

        return TesseractEngine(settings.tesseract)
    if settings.engine == "vllm":
        try:
            from consumers.engines.vllm import VllmEngine
        except ImportError as exc:
            raise ConfigurationError(
                "OCR_ENGINE=vllm needs vLLM, which is not installed: "
                "pip install 'medocr[vllm]' on a CUDA host."
            ) from exc
        return VllmEngine(settings.vllm, registry)
    raise ConfigurationError(f"unknown OCR_ENGINE {settings.engine!r}")
