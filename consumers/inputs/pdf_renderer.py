"""PDFium behind a renderer: child processes the worker can kill, or one lock in-process.

``ProcessRenderer`` (the worker's) keeps up to ``size`` child processes, each one
thread serving one ``PdfWorkbench``, one request at a time: PDFium's no-threads rule
holds by construction, and hostile bytes can only cost a child. A child that crashes
is replaced and its request fails as UNREADABLE_DOCUMENT; one that outlasts
``timeout_s`` is killed (DECODE_TIMEOUT); closing a document while its request runs
kills the child too, so an abandoned decode leaves no stuck PDFium behind. Children
start on first use, are capped in address space (``memory_limit_bytes``, so an image
bomb inside a PDF crashes a child, not the host) and retire after ``recycle_after``
requests, so a leak in PDFium cannot grow without bound.

``LockedRenderer`` runs the same workbench in this process under one lock: the baseline
the bench measures the pool against. A crash there ends the worker.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.context
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Protocol, TypeVar

from PIL import Image

from consumers.errors import DecodeTimeoutError, FatalError, UnreadableDocumentError
from consumers.inputs.pdf_workbench import (
    Canvas,
    Drawn,
    Missing,
    Opened,
    OpenRequest,
    PdfWorkbench,
    Refused,
    RenderRequest,
    Reply,
    Request,
)

# Children at most, so renders at once (PdfDecoder.concurrency is the pool's size): as
# many as a scan's Pillow decodes (RasterDecoder.concurrency), each ~90-140 MB of memory.
MAX_CHILDREN = 4
TIMEOUT_S = 60.0  # the worker's default OCR_DECODE_TIMEOUT_S
# Address space a child may map beyond its imports: a 4096 px page is 64 MB, PDFium's
# caches some more; an image inside a PDF that decodes to gigabytes is a bomb.
MEMORY_LIMIT_BYTES = 2 * 1024**3
RECYCLE_AFTER = 1000
# A child imports Python, Pillow and PDFium before it serves: a second, more on a busy
# host. A child that cannot start at all is a broken host, not a bad document.
START_TIMEOUT_S = 60.0
ORPHAN_CHECK_S = 1.0

Workbench = Callable[[Canvas], PdfWorkbench]  # picklable by reference: a class
_T = TypeVar("_T")


@dataclass(frozen=True)
class DocumentRef:
    """A document a renderer can (re)open anywhere: its id and its bytes."""

    doc_id: int
    raw: bytes
    max_pages: int


class PdfRenderer(Protocol):
    @property
    def size(self) -> int: ...  # requests it serves at once

    def open(self, doc: DocumentRef, request: OpenRequest) -> Opened | Refused: ...

    def render(
        self, doc: DocumentRef, request: RenderRequest
    ) -> Image.Image | Refused: ...

    def forget(self, doc_id: int) -> None: ...  # the document is closed

    def close(self) -> None: ...


def default_size() -> int:
    return max(1, min(MAX_CHILDREN, os.cpu_count() or 1))


@functools.cache
def default_renderer() -> ProcessRenderer:
    """The process's one pool, shared by every decoder that opens PDF bytes."""
    return ProcessRenderer()


class LockedRenderer:
    """PDFium in this process, one request at a time."""

    size = 1

    def __init__(self, workbench: Workbench = PdfWorkbench) -> None:
        self._canvas = Canvas()
        self._workbench = workbench(self._canvas)
        self._lock = threading.Lock()

    def open(self, doc: DocumentRef, request: OpenRequest) -> Opened | Refused:
        with self._lock:
            return _opened(self._workbench.handle(request))

    def render(self, doc: DocumentRef, request: RenderRequest) -> Image.Image | Refused:
        with self._lock:
            reply = _with_document(self._workbench.handle, doc, request)
            return _image(reply, self._canvas)

    def forget(self, doc_id: int) -> None:
        with self._lock:
            self._workbench.forget([doc_id])

    def close(self) -> None:
        with self._lock:
            self._workbench.close()
            self._canvas.close()


class ProcessRenderer:
    """PDFium in up to ``size`` child processes, each leased to one request at a time."""

    def __init__(
        self,
        size: int | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
        memory_limit_bytes: int = MEMORY_LIMIT_BYTES,
        recycle_after: int = RECYCLE_AFTER,
        workbench: Workbench = PdfWorkbench,
    ) -> None:
        self._size = size or default_size()
        self._timeout_s = timeout_s
        self._memory_limit_bytes = memory_limit_bytes
        self._recycle_after = recycle_after
        self._workbench = workbench
        # spawn: forking a worker that runs threads (asyncio, Kafka) is unsafe
        self._context = multiprocessing.get_context("spawn")
        self._changed = threading.Condition()
        self._idle: list[_Child] = []
        self._busy: dict[_Child, int] = {}  # child -> the document it works for
        self._starting = 0
        self.replaced = 0  # children lost to a crash, a timeout or an abandoned call

    @property
    def size(self) -> int:
        return self._size

    def open(self, doc: DocumentRef, request: OpenRequest) -> Opened | Refused:
        return self._call(doc, request, lambda reply, canvas: _opened(reply))

    def render(self, doc: DocumentRef, request: RenderRequest) -> Image.Image | Refused:
        return self._call(doc, request, _image)

    def forget(self, doc_id: int) -> None:
        with self._changed:
            for child in [*self._idle, *self._busy]:
                if doc_id in child.docs:
                    child.docs.discard(doc_id)
                    child.forgets.add(doc_id)
            for child, owner in self._busy.items():
                if owner == doc_id:  # its decode was abandoned: stop PDFium now
                    child.kill("the document was closed")

    def close(self) -> None:
        """Stop every child; one serving a request now is killed, and its caller
        stops it (it may be copying a page out of the canvas)."""
        with self._changed:
            idle, self._idle = self._idle, []
            for child in self._busy:
                child.kill("the renderer was closed")
        for child in idle:
            child.stop()

    def _call(
        self,
        doc: DocumentRef,
        request: Request,
        finish: Callable[[Reply, Canvas], _T],
    ) -> _T:
        """``request``'s reply, finished (its page copied out) before the child's
        next request can draw over it."""
        child = self._lease(doc.doc_id)
        healthy = False
        try:
            with self._changed:
                forget, child.forgets = tuple(child.forgets), set()
            ask = functools.partial(child.ask, timeout_s=self._timeout_s)
            reply = _with_document(ask, doc, request, forget)
            result = finish(reply, child.canvas)
        except _ChildLostError as lost:
            raise lost.error(request, self._timeout_s) from None
        else:
            with self._changed:
                child.docs.add(doc.doc_id)
            healthy = True
            return result
        finally:
            self._give_back(child, healthy)

    def _lease(self, doc_id: int) -> _Child:
        with self._changed:
            while True:
                warm = [c for c in self._idle if doc_id in c.docs]
                if warm or self._idle:
                    child = (warm or self._idle)[0]
                    self._idle.remove(child)
                    self._busy[child] = doc_id
                    return child
                if len(self._busy) + self._starting < self._size:
                    self._starting += 1
                    break
                self._changed.wait()
        try:
            child = _Child(self._context, self._workbench, self._memory_limit_bytes)
        except BaseException:
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()
            raise
        with self._changed:
            self._starting -= 1
            self._busy[child] = doc_id
        return child

    def _give_back(self, child: _Child, healthy: bool) -> None:
        keep = healthy and child.killed is None and child.calls < self._recycle_after
        if not keep:
            child.stop()
        with self._changed:
            del self._busy[child]
            if keep:
                self._idle.append(child)
            elif not healthy:
                self.replaced += 1
            self._changed.notify_all()


def _with_document(
    ask: Callable[[Request, tuple[int, ...]], Reply],
    doc: DocumentRef,
    request: Request,
    forget: tuple[int, ...] = (),
) -> Reply:
    """``request``'s reply, opening the document first where it is not open yet."""
    reply = ask(request, forget)
    if not isinstance(reply, Missing):
        return reply
    opened = ask(OpenRequest(doc.doc_id, doc.raw, doc.max_pages, facts=False), ())
    if isinstance(opened, Refused):
        return opened
    return ask(request, ())


def _opened(reply: Reply) -> Opened | Refused:
    if isinstance(reply, Opened | Refused):
        return reply
    raise TypeError(f"the PDF renderer answered {type(reply).__name__} to an open")


def _image(reply: Reply, canvas: Canvas) -> Image.Image | Refused:
    if isinstance(reply, Drawn):
        return canvas.image(reply)
    if isinstance(reply, Refused):
        return reply
    raise TypeError(f"the PDF renderer answered {type(reply).__name__} to a render")


class _ChildLostError(Exception):
    """The child died or was killed while it served a request."""

    def __init__(self, how: str, timed_out: bool = False) -> None:
        super().__init__(how)
        self.how = how
        self.timed_out = timed_out

    def error(self, request: Request, timeout_s: float) -> Exception:
        if isinstance(request, RenderRequest):
            what = f"rendering page {request.index + 1}"
        else:
            what = "opening the document"
        if self.timed_out:
            return DecodeTimeoutError(
                f"the PDF renderer took longer than {timeout_s:g} s {what}; "
                "it was stopped and replaced"
            )
        return UnreadableDocumentError(
            f"the PDF renderer {self.how} while {what}; it was replaced"
        )


class _Child:
    """One renderer process, the pipe to it and the canvas it draws on."""

    def __init__(
        self,
        context: multiprocessing.context.SpawnContext,
        workbench: Workbench,
        memory_limit_bytes: int,
    ) -> None:
        self.canvas = Canvas()
        self._conn, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(theirs, workbench, memory_limit_bytes),
            name="pdf-renderer",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self.docs: set[int] = set()  # documents it has open, as far as we know
        self.forgets: set[int] = set()  # closed documents to tell it about
        self.calls = 0
        self.killed: str | None = None
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """The child's imports are no request's time: wait for them apart."""
        try:
            send_handle(self._conn, self.canvas.fileno(), self._process.pid)
            if self._conn.poll(START_TIMEOUT_S) and self._conn.recv() == "ready":
                return
            why = f"was not ready within {START_TIMEOUT_S:g} s"
        except (EOFError, OSError):
            why = self._how_it_ended()
        self.stop()
        raise FatalError(f"the PDF renderer could not start: it {why}")

    def ask(self, request: Request, forget: tuple[int, ...], timeout_s: float) -> Reply:
        self.calls += 1
        try:
            self._conn.send((forget, request))
            if not self._conn.poll(timeout_s):
                self.kill("timed out")
                raise _ChildLostError("timed out", timed_out=True)
            reply: Reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise _ChildLostError(self._how_it_ended()) from exc
        return reply

    def kill(self, why: str) -> None:
        """Stop the process now; a caller waiting on it sees the pipe close."""
        if self.killed is None:
            self.killed = why
        with contextlib.suppress(ProcessLookupError, ValueError):
            self._process.kill()

    def stop(self) -> None:
        """Kill, reap and let go of everything; twice is harmless."""
        self.kill("stopped")
        with contextlib.suppress(ValueError):  # closed already
            self._process.join(timeout=5)
            self._process.close()
        self._conn.close()
        self.canvas.close()

    def _how_it_ended(self) -> str:
        if self.killed is not None:
            return f"was stopped ({self.killed})"
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is not None and code < 0:
            return f"crashed ({signal.Signals(-code).name})"
        return f"crashed (exit code {code})"


def _serve(conn: Connection, workbench: Workbench, memory_limit_bytes: int) -> None:
    """A child's life: requests in, replies out, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = os.getppid()
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    if memory_limit_bytes and os.path.exists("/proc/self/statm"):
        _cap_address_space(memory_limit_bytes)
    bench = workbench(Canvas(recv_handle(conn)))
    conn.send("ready")
    while True:
        try:
            forget, request = conn.recv()
        except EOFError:
            return
        conn.send(bench.handle(request, forget))


def _cap_address_space(extra_bytes: int) -> None:
    """Let the child map at most ``extra_bytes`` more than its imports took (those vary
    with the host: BLAS reserves memory per core)."""
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, used + extra_bytes))


def _orphan_watch(parent: int) -> None:
    """End the child once its parent is gone, even while PDFium hangs in the main
    thread (ctypes lets go of the GIL in C). Not PR_SET_PDEATHSIG: that fires when the
    parent *thread* ends, and children are started from short-lived decode threads."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)
