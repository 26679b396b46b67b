"""The production engine: an in-process vLLM v1 ``AsyncLLM`` (Qwen2.5-VL by default).

This is the only module that imports vLLM, at the top, so that ``build_engine`` turns a
missing install into one clear ``ConfigurationError``. The page logic (sizes, sampling,
quality retries, capacity) lives in ``vllm_pages`` and ``vllm_requests``; here are only
the client that speaks to vLLM and the translation of its errors at the edge:

- ``vllm`` ``EngineDeadError`` (engine core process gone, CUDA error inside it), or a
  CUDA ``RuntimeError`` raised in this process -> ``consumers.errors.EngineDeadError``
  (fatal: the worker stops, ``/ready`` turns 503, it exits non-zero);
- ``ValueError`` (vLLM's request validation, e.g. a prompt over the model length) and
  ``EngineGenerateError`` while the engine still runs -> ``PageFailedError``;
- a request vLLM ended unfinished (finish reason ``"error"`` or ``"abort"``) ->
  ``EngineBusyError`` (transient, retried): ``vllm_outputs`` says why these are the only
  transient conditions vLLM 0.26 has.

Text is streamed (``RequestOutputKind.DELTA``) only for a caller that listens; every
other request asks for ``FINAL_ONLY``, so vLLM detokenizes and sends nothing until the
end, as before streaming existed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

import torch
import vllm
from prometheus_client import CollectorRegistry
from transformers import AutoTokenizer
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError
from vllm.v1.engine.exceptions import EngineGenerateError
from vllm.v1.metrics.loggers import StatLoggerBase

from consumers.engines.vllm_outputs import GenerationCollector
from consumers.engines.vllm_pages import (
    EngineMetrics,
    Generation,
    GenerationRequest,
    TextSink,
    VllmClient,
    VllmPageEngine,
)
from consumers.engines.vllm_requests import engine_kwargs, gpus_suffice, require_gpus
from consumers.errors import ConfigurationError, EngineDeadError, PageFailedError
from consumers.settings import VllmSettings

log = logging.getLogger(__name__)

PROMPT_SENTINEL = "\x00medocr-prompt\x00"


class MetricsStatLogger(StatLoggerBase):  # type: ignore[misc]  # vllm is untyped here
    """vLLM stat logger that feeds ``EngineMetrics`` after every engine step."""

    def __init__(
        self, vllm_config: Any, engine_index: int = 0, *, metrics: EngineMetrics
    ):
        self._metrics = metrics

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        self._metrics.record(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        return None


def load_chat_template(model: str) -> tuple[str, Any]:
    """The model's tokenizer and its chat text for one user turn: image, then prompt.

    The template is rendered once with a sentinel for the prompt; each page then only
    substitutes its prompt into the text.
    """
    tokenizer = AutoTokenizer.from_pretrained(model)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": PROMPT_SENTINEL}],
        }
    ]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    if not isinstance(text, str) or text.count(PROMPT_SENTINEL) != 1:
        raise ConfigurationError(
            f"{model}'s chat template cannot render a turn with an image and text"
        )
    return text, tokenizer


class AsyncLlmClient:
    """``VllmClient`` over ``AsyncLLM``; build it with ``connect``."""

    def __init__(
        self, engine: AsyncLLM, template: str, tokenizer: Any, gpus_needed: int
    ) -> None:
        self._engine = engine
        self._template = template
        self._tokenizer = tokenizer
        self._gpus_needed = gpus_needed

    @classmethod
    async def connect(
        cls, settings: VllmSettings, metrics: EngineMetrics
    ) -> VllmClient:
        log.info("starting vLLM %s with %s", vllm.__version__, settings.model_name)
        # NVML count: unlike is_available(), it does not initialise CUDA in this
        # process, which vLLM forks for its engine core.
        require_gpus(settings.tensor_parallel_size, torch.cuda.device_count())
        args = AsyncEngineArgs(**engine_kwargs(settings))
        stat_logger = functools.partial(MetricsStatLogger, metrics=metrics)
        # Built in the running loop, as vLLM's own server does: its output queue task
        # starts here, so a core that fails at start is reported at once.
        engine = AsyncLLM.from_engine_args(args, stat_loggers=[stat_logger])
        try:
            template, tokenizer = await asyncio.to_thread(
                load_chat_template, settings.model_name
            )
        except BaseException:
            engine.shutdown()
            raise
        return cls(engine, template, tokenizer, settings.tensor_parallel_size)

    def kv_cache_tokens(self) -> int:
        """Tokens the whole engine can hold, whatever TENSOR_PARALLEL_SIZE is.

        With tensor parallelism each GPU stores its share of the KV heads of every
        block, and vLLM reports the blocks the ranks have in common: the product is
        the group's capacity, not one GPU's, and must not be multiplied by the TP size.
        """
        cache = self._engine.vllm_config.cache_config
        return int(cache.num_gpu_blocks or 0) * int(cache.block_size)

    def render_chat(self, prompt: str) -> str:
        return self._template.replace(PROMPT_SENTINEL, prompt)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def generate(
        self, request: GenerationRequest, on_text: TextSink | None = None
    ) -> Generation:
        collector = GenerationCollector(on_text)
        plan = request.sampling
        params = vllm.SamplingParams(
            temperature=plan.temperature,
            top_p=plan.top_p,
            max_tokens=plan.max_tokens,
            ignore_eos=plan.ignore_eos,
            output_kind=(
                RequestOutputKind.DELTA
                if collector.streams
                else RequestOutputKind.FINAL_ONLY
            ),
        )
        prompt = {
            "prompt": request.chat_text,
            "multi_modal_data": {"image": request.image},
        }
        try:
            # The renderer runs the multimodal processor in its threads, off the loop.
            (engine_input,) = await self._engine.renderer.render_cmpl_async([prompt])
            async for output in self._engine.generate(
                engine_input, params, request_id=f"page-{uuid.uuid4().hex}"
            ):
                collector.add(output.outputs, output.prompt_token_ids)
        except VllmEngineDeadError as exc:
            raise EngineDeadError(f"vLLM engine died: {exc}") from exc
        except EngineGenerateError as exc:
            if self._engine.errored:
                raise EngineDeadError(f"vLLM engine died: {exc.__cause__}") from exc
            raise PageFailedError(
                f"engine failed on the page: {exc.__cause__}"
            ) from exc
        except ValueError as exc:
            raise PageFailedError(f"engine rejected the page: {exc}") from exc
        except RuntimeError as exc:
            if "CUDA" in str(exc) or self._engine.errored:
                raise EngineDeadError(f"vLLM engine failed: {exc}") from exc
            raise
        return collector.generation()

    def is_dead(self) -> bool:
        return bool(self._engine.errored)

    def gpu_available(self) -> bool:
        return gpus_suffice(self._gpus_needed, torch.cuda.device_count())

    def shutdown(self) -> None:
        self._engine.shutdown()


class VllmEngine(VllmPageEngine):
    """``OCR_ENGINE=vllm``: the page engine over a real in-process ``AsyncLLM``."""

    def __init__(self, settings: VllmSettings, registry: CollectorRegistry) -> None:
        super().__init__(
            settings, registry, functools.partial(AsyncLlmClient.connect, settings)
        )
