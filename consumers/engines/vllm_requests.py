"""What one page asks of vLLM: image size, token budget, sampling, engine arguments.

Pure functions over settings and numbers, so CI checks every rule without a GPU. The
Qwen2-VL family sees an image as 14 px patches merged 2x2, i.e. one visual token per
28x28 px; the image processor resizes each page to multiples of 28 px within
[min_pixels, max_pixels] (``smart_resize``). ``fit_pixels`` repeats that arithmetic so
a page's prompt length is known before vLLM sees it; the resize itself is left to the
processor (in vLLM's renderer threads), as for any other vLLM user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consumers.errors import ConfigurationError, PageFailedError
from consumers.settings import VllmSettings

PATCH_PX = 28  # 14 px vision patches, merged 2x2 into one token
TOP_P_SAMPLED = 0.95
RETRY_TEMPERATURE_STEP = 0.2
MAX_TEMPERATURE = 1.0
MAX_REQUEST_TEMPERATURE = 2.0


def fit_pixels(
    width: int, height: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """The (width, height) Qwen2-VL's processor gives a page: 28 px grid, in bounds.

    Same arithmetic as transformers' ``smart_resize`` (round to the grid, then scale
    down or up by the square root of the area ratio, flooring or ceiling to the grid).
    """
    if width < 1 or height < 1:
        raise PageFailedError(f"page has no pixels ({width}x{height})")
    if max(width, height) / min(width, height) > 200:
        raise PageFailedError(f"page aspect ratio is over 200 ({width}x{height})")
    grid_w = max(PATCH_PX, round(width / PATCH_PX) * PATCH_PX)
    grid_h = max(PATCH_PX, round(height / PATCH_PX) * PATCH_PX)
    if grid_w * grid_h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        grid_w = max(PATCH_PX, math.floor(width / beta / PATCH_PX) * PATCH_PX)
        grid_h = max(PATCH_PX, math.floor(height / beta / PATCH_PX) * PATCH_PX)
    elif grid_w * grid_h < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        grid_w = math.ceil(width * beta / PATCH_PX) * PATCH_PX
        grid_h = math.ceil(height * beta / PATCH_PX) * PATCH_PX
    return grid_w, grid_h


def visual_tokens(width: int, height: int) -> int:
    """Visual tokens of an image that already has a ``fit_pixels`` size."""
    return (width // PATCH_PX) * (height // PATCH_PX)


def max_visual_tokens(max_pixels: int) -> int:
    """The most visual tokens any page can take under ``max_pixels``."""
    return max(1, max_pixels // (PATCH_PX * PATCH_PX))


def cap_max_tokens(requested: int, prompt_tokens: int, max_model_len: int) -> int:
    """The request's max_tokens, lowered so prompt + output fit the model length."""
    if requested < 1:
        raise PageFailedError(f"max_tokens must be at least 1 (got {requested})")
    room = max_model_len - prompt_tokens
    if room < 1:
        raise PageFailedError(
            f"the page's prompt takes {prompt_tokens} tokens; "
            f"MAX_MODEL_LEN={max_model_len} leaves no room for output"
        )
    return min(requested, room)


@dataclass(frozen=True)
class SamplingPlan:
    temperature: float
    top_p: float
    max_tokens: int
    ignore_eos: bool = False


def plan_sampling(
    temperature: float, attempt: int, max_tokens: int, *, ignore_eos: bool = False
) -> SamplingPlan:
    """Sampling for attempt 0, 1, ...: the request's temperature, then higher.

    A retry exists because the previous attempt looped or ran out of tokens; greedy
    decoding would only repeat it, so each retry adds ``RETRY_TEMPERATURE_STEP`` (up to
    ``MAX_TEMPERATURE``). ``top_p`` 0.95 applies only when sampling (temperature > 0).
    """
    if not 0.0 <= temperature <= MAX_REQUEST_TEMPERATURE:
        raise PageFailedError(
            f"temperature must be in 0..{MAX_REQUEST_TEMPERATURE} (got {temperature})"
        )
    if attempt > 0:
        raised = temperature + RETRY_TEMPERATURE_STEP * attempt
        temperature = max(temperature, min(MAX_TEMPERATURE, raised))
    top_p = TOP_P_SAMPLED if temperature > 0 else 1.0
    return SamplingPlan(temperature, top_p, max_tokens, ignore_eos)


@dataclass(frozen=True)
class CapacityFigure:
    """How many pages the worker keeps in flight, and the numbers behind it."""

    kv_cache_tokens: int
    tokens_per_page: int  # prompt (visual at max_pixels + text) + output budget
    kv_pages: int  # pages whose whole sequences fit in the KV cache at once
    running: int  # min(max_num_seqs, kv_pages): what the scheduler runs at once
    reserve: int  # pages queued behind the running ones (a second wave)
    pages: int  # running + reserve: the worker's in-flight limit


def page_capacity(
    settings: VllmSettings, kv_cache_tokens: int, text_prompt_tokens: int
) -> CapacityFigure:
    """The seed's capacity figure C from the engine's real KV-cache size.

    ``kv_cache_tokens`` is ``num_gpu_blocks * block_size`` as vLLM allocated it after
    profiling (GPU memory x utilisation - weights - activations). A page's sequence is
    at most ``visual(max_pixels) + text prompt + max_tokens`` long (max_tokens =
    ENGINE_CAPACITY_MAX_TOKENS, by default ENGINE_DEFAULT_MAX_TOKENS, capped by
    MAX_MODEL_LEN), so ``kv_pages`` pages can never
    be preempted for lack of cache; the scheduler runs at most ``MAX_NUM_SEQS`` of
    them: ``running = min(MAX_NUM_SEQS, kv_pages)``.

    A finished page frees its slot at once, but the next one needs time to be fetched,
    decoded and run through vLLM's processor. Pages of similar length finish in waves
    (a batch of forms, or every page of a benchmark at a fixed length), so the engine's
    waiting queue holds a whole second wave, already processed: ``reserve = running``
    (at least one prefill step, ``MAX_NUM_BATCHED_TOKENS / prompt tokens``). Waiting
    requests hold no KV blocks, so the reserve costs host memory, nothing on the GPU:
    the queued pages' processed pixels, and the decoded pages (up to 4096 px a side)
    still waiting for the processor. ``C = running + reserve``.
    """
    prompt_tokens = max_visual_tokens(settings.max_pixels) + max(0, text_prompt_tokens)
    output_tokens = max(
        1, min(settings.capacity_tokens(), settings.max_model_len - prompt_tokens)
    )
    tokens_per_page = prompt_tokens + output_tokens
    kv_pages = max(0, kv_cache_tokens) // tokens_per_page
    running = max(1, min(settings.max_num_seqs, kv_pages))
    prefill_step = math.ceil(settings.max_num_batched_tokens / prompt_tokens)
    reserve = max(running, prefill_step)
    return CapacityFigure(
        kv_cache_tokens=kv_cache_tokens,
        tokens_per_page=tokens_per_page,
        kv_pages=kv_pages,
        running=running,
        reserve=reserve,
        pages=running + reserve,
    )


def require_gpus(tensor_parallel_size: int, visible_gpus: int) -> None:
    """Refuse to start an engine whose tensor-parallel ranks cannot each get a GPU.

    Without this, vLLM falls back to Ray for a world larger than the visible GPUs and
    fails with a message about multi-node inference.
    """
    if not gpus_suffice(tensor_parallel_size, visible_gpus):
        raise ConfigurationError(
            f"TENSOR_PARALLEL_SIZE={tensor_parallel_size} needs "
            f"{tensor_parallel_size} GPUs but this process sees {visible_gpus} "
            "(check CUDA_VISIBLE_DEVICES)"
        )


def gpus_suffice(tensor_parallel_size: int, visible_gpus: int) -> bool:
    """``/health``'s ``gpu_available``: every tensor-parallel rank has its GPU."""
    return visible_gpus >= tensor_parallel_size >= 1


def engine_kwargs(settings: VllmSettings) -> dict[str, object]:
    """Keyword arguments for ``AsyncEngineArgs`` (and ``LLM``): one source for both."""
    return {
        "model": settings.model_name,
        "tokenizer": settings.model_name,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_util,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        # LLM() and AsyncEngineArgs default differently (16384 vs 2048 on an H100).
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "load_format": settings.load_format,
        "dtype": settings.dtype,
        # None: the checkpoint's own weights; fp8: quantized at load (changes numerics)
        "quantization": settings.quantization,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "limit_mm_per_prompt": {"image": 1, "video": 0},
        # transformers 5 ignores a bare max_pixels; the processor honours size{}.
        "mm_processor_kwargs": {
            "size": {
                "shortest_edge": settings.min_pixels,
                "longest_edge": settings.max_pixels,
            }
        },
        "enable_prefix_caching": settings.enable_prefix_caching,
        "mm_processor_cache_gb": settings.mm_processor_cache_gb,
        "enforce_eager": settings.enforce_eager,
        # The async renderer runs the multimodal processor in this many threads, off
        # the event loop; its processor cache is not thread-safe: one thread with it.
        "renderer_num_workers": (
            1 if settings.mm_processor_cache_gb > 0 else settings.prep_threads
        ),
        "seed": 0,
    }
