"""The pipeline's error tree and the one place that decides what an error means.

::

    PipelineError                   retriable  what happens
    ├── TransientError              yes        back off (capped, jittered), then escalate to fatal
    │   ├── EngineBusyError
    │   └── BrokerUnavailableError
    ├── PoisonRecordError           no         dead letter with the original bytes + FAILED result
    │   ├── UndecodableRecordError      UNDECODABLE_RECORD
    │   ├── InvalidRequestError         INVALID_REQUEST
    │   ├── EmptyDocumentError          EMPTY_DOCUMENT
    │   ├── DocumentTooLargeError       DOCUMENT_TOO_LARGE
    │   ├── UnsupportedFormatError      UNSUPPORTED_FORMAT
    │   ├── UnreadableImageError        UNREADABLE_IMAGE
    │   ├── PixelLimitError             PIXEL_LIMIT
    │   ├── TooManyPagesError           TOO_MANY_PAGES
    │   ├── ImageUriError               IMAGE_URI
    │   └── PageFailedError             PAGE_FAILED (a page the engine cannot read)
    └── FatalError                  no         stop fetching, commit nothing more, exit non-zero
        ├── EngineDeadError
        └── ConfigurationError

Library errors are translated where they are caught (``raise ... from exc``); anything
that is not a ``PipelineError`` is a bug and therefore fatal, never a dead letter.
"""

from __future__ import annotations

import enum


class PipelineError(Exception):
    retriable = False
    error_code = "PIPELINE_ERROR"


class TransientError(PipelineError):
    retriable = True
    error_code = "TRANSIENT"


class EngineBusyError(TransientError):
    error_code = "ENGINE_BUSY"


class BrokerUnavailableError(TransientError):
    error_code = "BROKER_UNAVAILABLE"


class PoisonRecordError(PipelineError):
    error_code = "POISON_RECORD"


class UndecodableRecordError(PoisonRecordError):
    error_code = "UNDECODABLE_RECORD"


class InvalidRequestError(PoisonRecordError):
    error_code = "INVALID_REQUEST"


class EmptyDocumentError(PoisonRecordError):
    error_code = "EMPTY_DOCUMENT"


class DocumentTooLargeError(PoisonRecordError):
    error_code = "DOCUMENT_TOO_LARGE"


class UnsupportedFormatError(PoisonRecordError):
    error_code = "UNSUPPORTED_FORMAT"


class UnreadableImageError(PoisonRecordError):
    error_code = "UNREADABLE_IMAGE"


class PixelLimitError(PoisonRecordError):
    error_code = "PIXEL_LIMIT"


class TooManyPagesError(PoisonRecordError):
    error_code = "TOO_MANY_PAGES"


class ImageUriError(PoisonRecordError):
    error_code = "IMAGE_URI"


class PageFailedError(PoisonRecordError):
    """A page the engine could not read (timeout, engine rejected the input)."""

    error_code = "PAGE_FAILED"


class FatalError(PipelineError):
    error_code = "FATAL"


class EngineDeadError(FatalError):
    error_code = "ENGINE_DEAD"


class ConfigurationError(FatalError):
    error_code = "CONFIGURATION"


class Action(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    CRASH = "crash"


def classify(exc: BaseException) -> Action:
    """Decide what the worker does with an error: the only place this is decided."""
    if isinstance(exc, TransientError):
        return Action.RETRY
    if isinstance(exc, PoisonRecordError):
        return Action.DEAD_LETTER
    return Action.CRASH


def error_code(exc: BaseException) -> str:
    if isinstance(exc, PipelineError):
        return exc.error_code
    return "INTERNAL"
