"""What vLLM's outputs for one request mean for a page (no vLLM import: CI tests it).

``AsyncLLM.generate`` yields ``RequestOutput``s. With ``RequestOutputKind.FINAL_ONLY``
(nobody listens: nothing is sent before the end) there is one, holding the whole text;
with ``DELTA`` (a listener wants the text as it comes) there is one per engine step,
merged when the reader lags, each holding only the new text and token ids.
``GenerationCollector`` reads either into one ``Generation``, with the prompt's length
as vLLM tokenized it (``RequestOutput.prompt_token_ids``: the image's placeholder
expanded to its visual tokens, so the count a usage report needs).

Where vLLM 0.26 can fail a request without the page being at fault, it says so in the
finish reason, not with an exception (``FinishReason`` in ``vllm/v1/engine/__init__.py``):

- ``"error"``: in its words a "retryable request-level internal error (e.g., KV load
  failure)";
- ``"abort"``: the engine dropped the request (``pause_generation(mode="abort")``, or a
  shutdown that aborts what is in flight). Our own aborts come only from cancelling the
  ``generate`` call, which never reads another output.

Both are ``EngineBusyError``, retried with backoff (``consumers.retry``); if the engine
is gone after all, the next attempt finds it dead. The other conditions one might call
transient do not exist in 0.26: ``AsyncLLM.add_request`` queues every request (no
queue-full or pending-token refusal: those errors arrived in later versions), a full KV
cache preempts and recomputes instead of refusing, and ``generate`` has no timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consumers.engines.vllm_pages import Generation, TextSink
from consumers.errors import EngineBusyError, PageFailedError

# vLLM's finish reasons for a request it ended without reading the page, and why.
RETRYABLE_FINISH_REASONS = {
    "error": "a retryable engine error",
    "abort": "the engine aborted it",
}


class Completion(Protocol):
    """What a page reads of ``vllm.outputs.CompletionOutput``."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...

    @property
    def finish_reason(self) -> str | None: ...


class GenerationCollector:
    """One request's outputs into a ``Generation``; deltas when ``on_text`` listens."""

    def __init__(self, on_text: TextSink | None = None) -> None:
        self._on_text = on_text
        self._parts: list[str] = []
        self._tokens = 0
        self._finish_reason: str | None = None
        self._prompt_tokens = 0
        self._outputs = 0

    @property
    def streams(self) -> bool:
        """Ask vLLM for ``DELTA`` outputs (else ``FINAL_ONLY``)."""
        return self._on_text is not None

    def add(
        self,
        completions: Sequence[Completion],
        prompt_token_ids: Sequence[int] | None = None,
    ) -> None:
        """One ``RequestOutput``: its ``outputs`` (a page asks for one sequence, n=1)
        and its ``prompt_token_ids`` (every output repeats them; None: not known)."""
        if prompt_token_ids:
            self._prompt_tokens = len(prompt_token_ids)
        if not completions:
            return
        completion = completions[0]
        self._outputs += 1
        if self._on_text is None:  # FINAL_ONLY: each output holds everything
            self._parts, self._tokens = [completion.text], 0
        elif completion.text:
            self._parts.append(completion.text)
            self._on_text(completion.text)
        self._tokens += len(completion.token_ids)
        self._finish_reason = completion.finish_reason or self._finish_reason

    def generation(self) -> Generation:
        """The page's text, once the outputs have ended."""
        if not self._outputs:
            raise PageFailedError("engine returned no output for the page")
        reason = self._finish_reason
        why = RETRYABLE_FINISH_REASONS.get(reason or "")
        if why is not None:
            raise EngineBusyError(f"vLLM ended the request unfinished ({why})")
        return Generation(
            "".join(self._parts), self._tokens, reason, self._prompt_tokens
        )
