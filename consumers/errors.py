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
    │   ├── UnreadableDocumentError     UNREADABLE_DOCUMENT (a PDF or DICOM structure)
    │   ├── EncryptedDocumentError      PDF_ENCRYPTED
    │   ├── UnsupportedTransferSyntaxError  UNSUPPORTED_TRANSFER_SYNTAX (DICOM)
    │   ├── NoImageDataError            NO_IMAGE_DATA (DICOM without pixels or a document)
    │   ├── NoTextLayerError            NO_TEXT_LAYER (OCR_PDF_TEXT_LAYER=only, a page without)
    │   ├── PixelLimitError             PIXEL_LIMIT
    │   ├── TooManyPagesError           TOO_MANY_PAGES
    │   ├── ImageUriError               IMAGE_URI
    │   ├── DecodeTimeoutError          DECODE_TIMEOUT
    │   ├── ResultTooLargeError         RESULT_TOO_LARGE
    │   └── PageFailedError             PAGE_FAILED (a page the engine cannot read)
    └── FatalError                  no         stop fetching, commit nothing more, exit non-zero
        ├── EngineDeadError
        └── ConfigurationError

Library errors are translated where they are caught (``raise ... from exc``). Anything
that is not a ``PipelineError`` is a bug, and where it happened decides what it means
(``Scope``): while handling one record it ends that record (``INTERNAL_ERROR``, FAILED
result + dead letter), so a record that trips a bug cannot crash-loop the group on
replay; in a shared resource (the engine, the broker, the loop itself) it is fatal.
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


class UnreadableDocumentError(PoisonRecordError):
    """A PDF or DICOM file whose structure cannot be read (truncated, broken xref...)."""

    error_code = "UNREADABLE_DOCUMENT"


class EncryptedDocumentError(PoisonRecordError):
    """A PDF that needs a password (or is encrypted at all)."""

    error_code = "PDF_ENCRYPTED"


class UnsupportedTransferSyntaxError(PoisonRecordError):
    """DICOM pixel data in a transfer syntax no installed decoder reads."""

    error_code = "UNSUPPORTED_TRANSFER_SYNTAX"


class NoImageDataError(PoisonRecordError):
    """A DICOM object with neither pixel data nor an encapsulated document (SR, RT...)."""

    error_code = "NO_IMAGE_DATA"


class NoTextLayerError(PoisonRecordError):
    """OCR_PDF_TEXT_LAYER=only and the page has no usable text layer."""

    error_code = "NO_TEXT_LAYER"


class PixelLimitError(PoisonRecordError):
    error_code = "PIXEL_LIMIT"


class TooManyPagesError(PoisonRecordError):
    error_code = "TOO_MANY_PAGES"


class ImageUriError(PoisonRecordError):
    error_code = "IMAGE_URI"


class DecodeTimeoutError(PoisonRecordError):
    """The document's pages took longer to decode than OCR_DECODE_TIMEOUT_S."""

    error_code = "DECODE_TIMEOUT"


class ResultTooLargeError(PoisonRecordError):
    """The recognised text does not fit one result under the producer's size limit."""

    error_code = "RESULT_TOO_LARGE"


class PageFailedError(PoisonRecordError):
    """A page the engine could not read (timeout, engine rejected the input)."""

    error_code = "PAGE_FAILED"


class FatalError(PipelineError):
    error_code = "FATAL"


class EngineDeadError(FatalError):
    error_code = "ENGINE_DEAD"


class ConfigurationError(FatalError):
    error_code = "CONFIGURATION"


INTERNAL_ERROR = "INTERNAL_ERROR"


class Action(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    CRASH = "crash"


class Scope(enum.Enum):
    """Where an error happened: what it can have damaged."""

    RECORD = "record"  # handling one record: its bytes, its pages, its result
    SHARED = "shared"  # the engine, the broker, the loop: every record depends on it


def classify(exc: BaseException, scope: Scope = Scope.SHARED) -> Action:
    """Decide what the worker does with an error: the only place this is decided."""
    if isinstance(exc, TransientError):
        return Action.RETRY
    if isinstance(exc, PoisonRecordError):
        return Action.DEAD_LETTER
    if isinstance(exc, PipelineError) or not isinstance(exc, Exception):
        return Action.CRASH  # FatalError; CancelledError, KeyboardInterrupt, SystemExit
    return Action.DEAD_LETTER if scope is Scope.RECORD else Action.CRASH


def broker_error(exc: BaseException, what: str) -> PipelineError:
    """A Kafka client error, translated where it is caught: transient when the client
    marks it retriable (aiokafka's ``retriable`` flag), else fatal."""
    if getattr(exc, "retriable", False):
        return BrokerUnavailableError(f"{what} failed: {exc!r}")
    return FatalError(f"{what} was refused by the broker: {exc!r}")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, PipelineError):
        return exc.error_code
    return INTERNAL_ERROR
