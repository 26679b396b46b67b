"""The classify() table: every error class, and what unknown exceptions mean."""

from __future__ import annotations

import asyncio

import pytest

from consumers import errors
from consumers.errors import Action, PipelineError, Scope, classify, error_code
from consumers.retry import RetriesExhaustedError
from consumers.worker import WorkerFailedError

TABLE: list[tuple[type[BaseException], Action, str]] = [
    (errors.TransientError, Action.RETRY, "TRANSIENT"),
    (errors.EngineBusyError, Action.RETRY, "ENGINE_BUSY"),
    (errors.BrokerUnavailableError, Action.RETRY, "BROKER_UNAVAILABLE"),
    (errors.PoisonRecordError, Action.DEAD_LETTER, "POISON_RECORD"),
    (errors.UndecodableRecordError, Action.DEAD_LETTER, "UNDECODABLE_RECORD"),
    (errors.InvalidRequestError, Action.DEAD_LETTER, "INVALID_REQUEST"),
    (errors.EmptyDocumentError, Action.DEAD_LETTER, "EMPTY_DOCUMENT"),
    (errors.DocumentTooLargeError, Action.DEAD_LETTER, "DOCUMENT_TOO_LARGE"),
    (errors.UnsupportedFormatError, Action.DEAD_LETTER, "UNSUPPORTED_FORMAT"),
    (errors.UnreadableImageError, Action.DEAD_LETTER, "UNREADABLE_IMAGE"),
    (errors.UnreadableDocumentError, Action.DEAD_LETTER, "UNREADABLE_DOCUMENT"),
    (errors.EncryptedDocumentError, Action.DEAD_LETTER, "PDF_ENCRYPTED"),
    (
        errors.UnsupportedTransferSyntaxError,
        Action.DEAD_LETTER,
        "UNSUPPORTED_TRANSFER_SYNTAX",
    ),
    (errors.NoImageDataError, Action.DEAD_LETTER, "NO_IMAGE_DATA"),
    (errors.NoTextLayerError, Action.DEAD_LETTER, "NO_TEXT_LAYER"),
    (errors.PixelLimitError, Action.DEAD_LETTER, "PIXEL_LIMIT"),
    (errors.TooManyPagesError, Action.DEAD_LETTER, "TOO_MANY_PAGES"),
    (errors.ImageUriError, Action.DEAD_LETTER, "IMAGE_URI"),
    (errors.DecodeTimeoutError, Action.DEAD_LETTER, "DECODE_TIMEOUT"),
    (errors.ResultTooLargeError, Action.DEAD_LETTER, "RESULT_TOO_LARGE"),
    (errors.PageFailedError, Action.DEAD_LETTER, "PAGE_FAILED"),
    (errors.FatalError, Action.CRASH, "FATAL"),
    (errors.EngineDeadError, Action.CRASH, "ENGINE_DEAD"),
    (errors.ConfigurationError, Action.CRASH, "CONFIGURATION"),
    (RetriesExhaustedError, Action.CRASH, "RETRIES_EXHAUSTED"),
    (WorkerFailedError, Action.CRASH, "WORKER_FAILED"),
    (PipelineError, Action.CRASH, "PIPELINE_ERROR"),
]


def _all_pipeline_errors() -> set[type[PipelineError]]:
    found: set[type[PipelineError]] = set()
    todo: list[type[PipelineError]] = [PipelineError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("cls", "action", "code"), TABLE, ids=[cls.__name__ for cls, _, _ in TABLE]
)
def test_classify_table(cls: type[BaseException], action: Action, code: str) -> None:
    exc = cls("something went wrong")
    assert classify(exc) is action
    assert error_code(exc) == code
    assert getattr(cls, "retriable", False) is (action is Action.RETRY)


def test_the_table_covers_every_error_class() -> None:
    covered = {cls for cls, _, _ in TABLE}
    # Other helpers may add subclasses in their own modules; the core tree is all here.
    core = {c for c in _all_pipeline_errors() if c.__module__ == errors.__name__}
    assert core <= covered


def test_error_codes_are_unique() -> None:
    classes = sorted(_all_pipeline_errors(), key=lambda c: c.__name__)
    codes = [c.error_code for c in classes]
    duplicates = {code for code in codes if codes.count(code) > 1}
    assert not duplicates, duplicates


BUGS = [
    ValueError("bug"),
    KeyError("bug"),
    TypeError("bug"),
    RuntimeError("bug"),
    OSError("disk"),
    OverflowError("bug"),
    MemoryError(),
    TimeoutError("slow"),
]


@pytest.mark.parametrize("exc", BUGS, ids=lambda exc: type(exc).__name__)
def test_unknown_exceptions_in_a_shared_resource_crash(exc: BaseException) -> None:
    assert classify(exc) is Action.CRASH
    assert classify(exc, Scope.SHARED) is Action.CRASH
    assert error_code(exc) == "INTERNAL_ERROR"


@pytest.mark.parametrize("exc", BUGS, ids=lambda exc: type(exc).__name__)
def test_unknown_exceptions_while_handling_one_record_end_that_record(
    exc: BaseException,
) -> None:
    assert classify(exc, Scope.RECORD) is Action.DEAD_LETTER
    assert error_code(exc) == "INTERNAL_ERROR"


@pytest.mark.parametrize(
    "exc",
    [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1)],
    ids=lambda exc: type(exc).__name__,
)
@pytest.mark.parametrize("scope", list(Scope))
def test_cancellation_and_interrupts_are_never_dead_letters(
    exc: BaseException, scope: Scope
) -> None:
    assert classify(exc, scope) is Action.CRASH


@pytest.mark.parametrize("scope", list(Scope))
def test_fatal_errors_stay_fatal_in_any_scope(scope: Scope) -> None:
    assert classify(errors.EngineDeadError("gone"), scope) is Action.CRASH
    assert classify(RetriesExhaustedError("still busy"), scope) is Action.CRASH


def test_poison_subclass_keeps_its_own_code() -> None:
    class CustomPoisonError(errors.PoisonRecordError):
        error_code = "CUSTOM"

    assert classify(CustomPoisonError("x")) is Action.DEAD_LETTER
    assert error_code(CustomPoisonError("x")) == "CUSTOM"


def test_broker_errors_are_translated_by_their_retriable_flag() -> None:
    from aiokafka.errors import MessageSizeTooLargeError, RequestTimedOutError

    busy = errors.broker_error(RequestTimedOutError(), "publishing a result")
    refused = errors.broker_error(MessageSizeTooLargeError(), "publishing a result")
    assert (classify(busy), busy.error_code) == (Action.RETRY, "BROKER_UNAVAILABLE")
    assert (classify(refused), refused.error_code) == (Action.CRASH, "FATAL")
    assert "publishing a result" in str(refused)
