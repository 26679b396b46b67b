"""The real vLLM engine on a GPU host: start, capacity from the KV cache, a few pages.

Runs only where CUDA and vLLM are (``pytest -m gpu tests/gpu``), never in CI. The model
is ``MEDOCR_GPU_MODEL`` (default ``/tmp/model``, the bundle's weight-less Qwen2.5-VL-7B
directory) with ``MEDOCR_GPU_LOAD_FORMAT`` (default ``dummy``): random weights emit
random tokens, so the tests check shapes and accounting, never text.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from consumers.engines import PageRequest, PageStatus
from consumers.engines.vllm_pages import WARM_UP_TOKENS, VllmPageEngine
from consumers.settings import DEFAULT_PROMPT, VllmSettings
from tests.gpu.doc_pages import make_page

pytestmark = [
    pytest.mark.gpu,
    # torch and vLLM import with DeprecationWarnings of their own, and vLLM's zmq
    # context is collected after shutdown with an ignored __del__ exception
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def gpu_settings(**overrides: str) -> VllmSettings:
    env = {
        "MODEL_NAME": os.environ.get("MEDOCR_GPU_MODEL", "/tmp/model"),
        "ENGINE_LOAD_FORMAT": os.environ.get("MEDOCR_GPU_LOAD_FORMAT", "dummy"),
        "ENGINE_DTYPE": "bfloat16",
        "ENGINE_ENFORCE_EAGER": "true",  # start in ~1 min; speed is the benchmark's job
        "MAX_MODEL_LEN": "4096",
        "GPU_MEMORY_UTIL": "0.8",
        "MAX_NUM_SEQS": "16",
        "ENGINE_MAX_NUM_BATCHED_TOKENS": "8192",
        "ENGINE_QUALITY_RETRIES": "1",
        "ENGINE_IGNORE_EOS": "true",
        **overrides,
    }
    return VllmSettings.model_validate(env)


def request(image: Image.Image, number: int, max_tokens: int) -> PageRequest:
    return PageRequest(
        document_id="gpu-test",
        page_number=number,
        image=image,
        prompt=DEFAULT_PROMPT,
        max_tokens=max_tokens,
        temperature=0.0,
    )


def test_real_engine_recognises_pages_and_reports_capacity() -> None:
    from consumers.engines.vllm import VllmEngine

    registry = CollectorRegistry()
    capacity = asyncio.run(_exercise(VllmEngine(gpu_settings(), registry)))
    sample = registry.get_sample_value
    assert sample("ocr_engine_page_capacity") == capacity
    # 3 pages x 2 attempts, each 1260 visual tokens + text, 24 generated tokens
    assert (sample("ocr_engine_prompt_tokens_total") or 0) >= 3 * 2 * 1260
    generated = sample("ocr_engine_generation_tokens_total") or 0
    assert 3 * 2 * 24 <= generated <= 3 * 2 * 24 + WARM_UP_TOKENS  # + start's warm-up


async def _exercise(engine: VllmPageEngine) -> int:
    assert not engine.health().loaded
    await engine.start()
    try:
        health = engine.health()
        assert health.loaded
        assert health.gpu_available
        figure = engine.capacity_figure()
        assert figure is not None
        assert figure.kv_cache_tokens > 100_000  # num_gpu_blocks * block_size
        assert figure.running == 16  # MAX_NUM_SEQS: the KV cache holds far more
        assert figure.reserve >= 1
        assert engine.capacity() == figure.pages == figure.running + figure.reserve
        pages = [make_page(i) for i in range(3)]
        results = await asyncio.gather(
            *(
                engine.recognize(request(page, i + 1, 24))
                for i, page in enumerate(pages)
            )
        )
        for result in results:
            # ignore_eos: every attempt runs to max_tokens, so the page is flagged
            # (TRUNCATED, or REPETITIVE if the random tokens happen to loop) after
            # one quality retry, and never passed off as OK.
            assert result.status in (PageStatus.TRUNCATED, PageStatus.REPETITIVE)
            assert result.attempts == 2
            assert result.token_count == 24
            assert result.finish_reason == "length"
    finally:
        await engine.close()
    assert not engine.health().loaded
    return figure.pages
