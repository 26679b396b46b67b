"""The vLLM engine's page logic, its engine boundary faked at the edge (no GPU).

``FakeVllmClient`` stands where ``AsyncLlmClient`` stands in production: it records
every request it is given and answers from a script, so these tests see exactly what the
engine would be asked (image size, chat text, sampling) and what a page ends as. Its
answers go through the real ``GenerationCollector`` as vLLM would send them: one final
output, or word-sized deltas when a listener asked for a stream.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumers.budget import PageBudget, PagePlaces
from consumers.engines import (
    OcrEngine,
    PageEvent,
    PageRequest,
    PageStatus,
    StreamRestarted,
    TextDelta,
)
from consumers.engines.vllm_outputs import GenerationCollector
from consumers.engines.vllm_pages import (
    WARM_UP_TOKENS,
    EngineMetrics,
    Generation,
    GenerationRequest,
    TextSink,
    VllmClient,
    VllmPageEngine,
)
from consumers.engines.vllm_quality import (
    RUN_MIN_CHARS,
    has_long_run,
    is_repetitive,
    judge_page,
    repeated_tail,
)
from consumers.engines.vllm_requests import (
    cap_max_tokens,
    engine_kwargs,
    fit_pixels,
    gpus_suffice,
    max_visual_tokens,
    page_capacity,
    plan_sampling,
    require_gpus,
    visual_tokens,
)
from consumers.errors import (
    ConfigurationError,
    EngineBusyError,
    EngineDeadError,
    PageFailedError,
)
from consumers.inputs import Page
from consumers.metrics import WorkerMetrics
from consumers.recognition import PageOptions, PageRecognizer
from consumers.retry import RetryPolicy
from consumers.settings import DEFAULT_PROMPT, Settings, VllmSettings, env_names
from schemas import OcrRequest
from tests.support.records import consumer_record, sender_request

CHAT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n"
TEXT_TOKENS = (
    40  # what the fake tokenizer says the chat text takes, placeholder included
)
KV_TOKENS = 900_000
# An A4 page at 150 dpi (1240x1754, resized to 840x1176): 1260 visual tokens, plus the
# chat text's tokens without the placeholder that the visual tokens replace
PAGE_PROMPT_TOKENS = 1260 + TEXT_TOKENS - 1


def settings(**overrides: object) -> VllmSettings:
    return VllmSettings.model_validate(overrides)


@dataclass(frozen=True)
class FakeCompletion:
    """One ``CompletionOutput`` as vLLM sends it: whole (FINAL_ONLY) or a delta."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None


def vllm_outputs(generation: Generation, delta: bool) -> list[list[FakeCompletion]]:
    """The ``RequestOutput.outputs`` vLLM would send for ``generation``."""
    tokens = tuple(range(generation.output_tokens))
    if not delta:
        return [[FakeCompletion(generation.text, tokens, generation.finish_reason)]]
    pieces = re.findall(r"\s*\S+", generation.text) or [""]
    step = -(-len(tokens) // len(pieces))  # ceiling: every token is sent once
    outputs = [
        [FakeCompletion(piece, tokens[i * step : (i + 1) * step])]
        for i, piece in enumerate(pieces)
    ]
    last = outputs[-1][0]
    outputs[-1] = [FakeCompletion(last.text, last.token_ids, generation.finish_reason)]
    return outputs


@dataclass
class FakeVllmClient:
    """Answers each generate() from ``script`` (one entry a call; the last repeats)."""

    script: list[Generation | Exception]
    kv_tokens: int = KV_TOKENS
    dead: bool = False
    warm_ups: list[GenerationRequest] = field(default_factory=list)
    requests: list[GenerationRequest] = field(default_factory=list)
    streamed: list[bool] = field(default_factory=list)  # DELTA asked, per request
    rendered: list[str] = field(default_factory=list)
    closed: bool = False

    def kv_cache_tokens(self) -> int:
        return self.kv_tokens

    def render_chat(self, prompt: str) -> str:
        self.rendered.append(prompt)
        return CHAT.format(prompt)

    def count_tokens(self, text: str) -> int:
        return TEXT_TOKENS

    async def generate(
        self, request: GenerationRequest, on_text: TextSink | None = None
    ) -> Generation:
        if not self.warm_ups:  # start() sends one blank page first
            self.warm_ups.append(request)
            return Generation("", request.sampling.max_tokens, "length")
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(step, Exception):
            raise step
        collector = GenerationCollector(on_text)
        self.streamed.append(collector.streams)
        # every RequestOutput repeats the prompt's ids; none when the script says 0
        prompt_ids = tuple(range(step.prompt_tokens)) or None
        for completions in vllm_outputs(step, delta=collector.streams):
            collector.add(completions, prompt_ids)
            await asyncio.sleep(0)  # one engine step
        return collector.generation()

    def is_dead(self) -> bool:
        return self.dead

    def gpu_available(self) -> bool:
        return True

    def shutdown(self) -> None:
        self.closed = True


def ok(text: str = "환자 성명: 홍길동\n진단: 감기") -> Generation:
    return Generation(text=text, output_tokens=len(text), finish_reason="stop")


def cut(text: str = "a long page that did not") -> Generation:
    return Generation(text=text, output_tokens=4096, finish_reason="length")


LOOP = Generation(text="Name: " + "_" * 600, output_tokens=600, finish_reason="length")


@pytest.fixture
async def make_engine() -> AsyncIterator[
    Callable[..., tuple[VllmPageEngine, FakeVllmClient]]
]:
    engines: list[VllmPageEngine] = []

    def make(
        script: list[Generation | Exception], **overrides: object
    ) -> tuple[VllmPageEngine, FakeVllmClient]:
        client = FakeVllmClient(script)

        async def connect(metrics: EngineMetrics) -> VllmClient:
            return client

        engine = VllmPageEngine(settings(**overrides), CollectorRegistry(), connect)
        engines.append(engine)
        return engine, client

    yield make
    for engine in engines:
        await engine.close()


def page(
    width: int = 1240,
    height: int = 1754,
    *,
    mode: str = "L",
    max_tokens: int = 4096,
    temperature: float = 0.0,
    prompt: str = DEFAULT_PROMPT,
) -> PageRequest:
    return PageRequest(
        document_id="doc-1",
        page_number=1,
        image=Image.new(mode, (width, height), 255),
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
    )


# ---------------------------------------------------------------- pixel bounds


@pytest.mark.parametrize(
    ("size", "bounds", "expected"),
    [
        (
            (1240, 1754),
            (3136, 1280 * 28 * 28),
            (840, 1176),
        ),  # A4 at 150 dpi: scaled down
        ((840, 1176), (3136, 1280 * 28 * 28), (840, 1176)),  # already on the grid
        ((1000, 700), (3136, 1280 * 28 * 28), (1008, 700)),  # rounded to the 28 px grid
        ((20, 20), (3136, 1280 * 28 * 28), (56, 56)),  # tiny: scaled up to min_pixels
        ((4096, 4096), (3136, 256 * 28 * 28), (448, 448)),  # square, small budget
    ],
)
def test_fit_pixels_matches_the_processor_grid(
    size: tuple[int, int], bounds: tuple[int, int], expected: tuple[int, int]
) -> None:
    width, height = fit_pixels(*size, *bounds)
    assert (width, height) == expected
    assert width % 28 == 0
    assert height % 28 == 0
    assert bounds[0] <= width * height <= bounds[1]


@pytest.mark.parametrize(
    "size",
    [(w, h) for w in (29, 333, 1240, 2480, 4096) for h in (57, 1000, 1754, 4096)],
)
def test_fit_pixels_always_lands_in_bounds(size: tuple[int, int]) -> None:
    width, height = fit_pixels(*size, 3136, 1280 * 28 * 28)
    assert 3136 <= width * height <= 1280 * 28 * 28
    assert visual_tokens(width, height) <= max_visual_tokens(1280 * 28 * 28)


def test_fit_pixels_refuses_slivers() -> None:
    with pytest.raises(PageFailedError, match="aspect ratio"):
        fit_pixels(10_000, 20, 3136, 1280 * 28 * 28)


# ---------------------------------------------------------------- sampling rules


def test_greedy_request_has_no_top_p() -> None:
    plan = plan_sampling(0.0, 0, 512)
    assert (plan.temperature, plan.top_p, plan.max_tokens) == (0.0, 1.0, 512)
    assert plan.ignore_eos is False


def test_sampled_request_uses_top_p_095() -> None:
    plan = plan_sampling(0.7, 0, 512)
    assert (plan.temperature, plan.top_p) == (0.7, 0.95)


@pytest.mark.parametrize(
    ("temperature", "attempts", "expected"),
    [(0.0, 3, [0.0, 0.2, 0.4]), (0.7, 3, [0.7, 0.9, 1.0]), (1.5, 2, [1.5, 1.5])],
)
def test_retries_raise_the_temperature_and_never_lower_it(
    temperature: float, attempts: int, expected: list[float]
) -> None:
    temps = [plan_sampling(temperature, a, 64).temperature for a in range(attempts)]
    assert temps == pytest.approx(expected)
    assert all(
        plan_sampling(temperature, a, 64).top_p == 0.95 for a in range(1, attempts)
    )


@pytest.mark.parametrize("temperature", [-0.1, 2.5])
def test_out_of_range_temperature_fails_the_page(temperature: float) -> None:
    with pytest.raises(PageFailedError, match="temperature"):
        plan_sampling(temperature, 0, 64)


@pytest.mark.parametrize(
    ("requested", "prompt", "expected"),
    [(4096, 1300, 4096), (8000, 1300, 6892), (1, 8191, 1)],
)
def test_max_tokens_is_capped_by_the_model_length(
    requested: int, prompt: int, expected: int
) -> None:
    assert cap_max_tokens(requested, prompt, 8192) == expected


@pytest.mark.parametrize(("requested", "prompt"), [(0, 100), (10, 8192), (10, 9000)])
def test_max_tokens_without_room_fails_the_page(requested: int, prompt: int) -> None:
    with pytest.raises(PageFailedError):
        cap_max_tokens(requested, prompt, 8192)


def test_engine_kwargs_carry_every_setting_and_pin_the_batch_budget() -> None:
    kwargs = engine_kwargs(
        settings(
            MODEL_NAME="/tmp/model",
            GPU_MEMORY_UTIL=0.85,
            MAX_NUM_SEQS=128,
            ENGINE_LOAD_FORMAT="dummy",
            ENGINE_DTYPE="bfloat16",
            ENGINE_MAX_PIXELS=1003520,
        )
    )
    assert kwargs["model"] == kwargs["tokenizer"] == "/tmp/model"
    assert kwargs["gpu_memory_utilization"] == 0.85
    assert kwargs["max_num_seqs"] == 128
    assert kwargs["max_num_batched_tokens"] == 16384
    assert kwargs["load_format"] == "dummy"
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["limit_mm_per_prompt"] == {"image": 1, "video": 0}
    assert kwargs["mm_processor_kwargs"] == {
        "size": {"shortest_edge": 3136, "longest_edge": 1003520}
    }
    assert kwargs["enable_prefix_caching"] is False
    assert kwargs["mm_processor_cache_gb"] == 0.0
    assert kwargs["renderer_num_workers"] == 4


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any medocr setting, to set some of them in."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_engine_kwargs_keep_the_models_weights_and_kv_cache_by_default() -> None:
    kwargs = engine_kwargs(settings())
    assert kwargs["quantization"] is None
    assert kwargs["kv_cache_dtype"] == "auto"


@pytest.mark.parametrize("kv_cache_dtype", ["fp8", "fp8_e4m3", "fp8_e5m2"])
def test_fp8_weights_and_kv_cache_go_from_the_environment_to_the_engine(
    environ: pytest.MonkeyPatch, kv_cache_dtype: str
) -> None:
    environ.setenv("ENGINE_QUANTIZATION", "fp8")
    environ.setenv("ENGINE_KV_CACHE_DTYPE", kv_cache_dtype)
    kwargs = engine_kwargs(Settings().vllm)
    assert kwargs["quantization"] == "fp8"
    assert kwargs["kv_cache_dtype"] == kv_cache_dtype


def test_a_blank_quantization_is_the_models_own_weights(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("ENGINE_QUANTIZATION", "")
    assert engine_kwargs(Settings().vllm)["quantization"] is None


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("ENGINE_QUANTIZATION", "FP8", "should match pattern"),
        ("ENGINE_QUANTIZATION", "fp8 --trust-remote-code", "should match pattern"),
        ("ENGINE_KV_CACHE_DTYPE", "fp16", "'auto', 'fp8', 'fp8_e4m3' or 'fp8_e5m2'"),
        ("ENGINE_KV_CACHE_DTYPE", "int8", "'auto', 'fp8', 'fp8_e4m3' or 'fp8_e5m2'"),
    ],
)
def test_unknown_quantization_settings_are_refused_by_name(
    environ: pytest.MonkeyPatch, name: str, raw: str, says: str
) -> None:
    environ.setenv(name, raw)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert name in message
    assert says in message


def test_engine_kwargs_spread_the_engine_over_tensor_parallel_gpus() -> None:
    assert engine_kwargs(settings())["tensor_parallel_size"] == 1
    assert engine_kwargs(settings(TENSOR_PARALLEL_SIZE=2))["tensor_parallel_size"] == 2


# ---------------------------------------------------------------- GPUs per worker


@pytest.mark.parametrize(("tp", "visible"), [(2, 1), (2, 0), (4, 2), (1, 0)])
def test_start_refuses_more_tensor_parallel_ranks_than_gpus(
    tp: int, visible: int
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        require_gpus(tp, visible)
    message = str(caught.value)
    assert f"TENSOR_PARALLEL_SIZE={tp}" in message
    assert f"sees {visible}" in message
    assert "CUDA_VISIBLE_DEVICES" in message


@pytest.mark.parametrize(("tp", "visible"), [(1, 1), (1, 2), (2, 2), (2, 8)])
def test_start_accepts_enough_gpus(tp: int, visible: int) -> None:
    require_gpus(tp, visible)


@pytest.mark.parametrize(
    ("tp", "visible", "available"),
    [(1, 0, False), (1, 1, True), (2, 1, False), (2, 2, True), (2, 4, True)],
)
def test_gpu_available_means_a_gpu_for_every_rank(
    tp: int, visible: int, available: bool
) -> None:
    assert gpus_suffice(tp, visible) is available


def test_processor_cache_forces_one_renderer_thread() -> None:
    kwargs = engine_kwargs(settings(ENGINE_MM_CACHE_GB=4, ENGINE_PREP_THREADS=8))
    assert kwargs["renderer_num_workers"] == 1


# ---------------------------------------------------------------- repetition detection


@pytest.mark.parametrize(
    "text",
    [
        "Signature: " + "_" * RUN_MIN_CHARS,
        "Total " + "." * 400 + " 12",
        "| 1 | " + "ㅋ" * 300,
        "Header\n" + "| --- | --- |\n" * 40,
        "진단명: " + "감기 " * 200,
        "abc " + "lorem ipsum dolor sit amet, " * 20,
        "x\n" + "Name:\n\n  ____\n" * 30,  # whitespace differences do not hide a loop
    ],
)
def test_loops_are_repetitive(text: str) -> None:
    assert is_repetitive(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "환자 성명: 홍길동\n진단: 감기\n처방: 타이레놀 500mg",
        "Signature: " + "_" * 60 + "  Date: ____/____/______",
        "Contents " + "." * 80 + " 3\nMethods " + "." * 82 + " 7",
        "| a | b |\n| --- | --- |\n" + "|  |  |\n" * 12 + "Total: 3",
        " ".join(f"line {i}: value {i * 7 % 13}" for i in range(300)),
    ],
)
def test_real_pages_are_not_repetitive(text: str) -> None:
    assert not is_repetitive(text)


def test_long_run_ignores_whitespace_runs() -> None:
    assert not has_long_run(" " * 1000)
    assert not has_long_run("\n" * 1000)


def test_repeated_tail_reports_the_shortest_period() -> None:
    assert repeated_tail("intro " + "ab" * 200) == (2, 200)
    assert repeated_tail("intro only once") is None


@pytest.mark.parametrize(
    ("text", "finish", "status"),
    [
        ("fine", "stop", PageStatus.OK),
        ("fine", None, PageStatus.OK),
        ("cut off", "length", PageStatus.TRUNCATED),
        ("_" * 500, "length", PageStatus.REPETITIVE),  # a loop that hit the limit
        ("_" * 500, "stop", PageStatus.REPETITIVE),
    ],
)
def test_judge_page(text: str, finish: str, status: PageStatus) -> None:
    assert judge_page(text, finish) is status


# ---------------------------------------------------------------- capacity figure


def test_capacity_is_the_running_slots_plus_a_second_wave() -> None:
    figure = page_capacity(settings(MAX_NUM_SEQS=128), KV_TOKENS, TEXT_TOKENS)
    # 1280 visual + 40 text + 4096 output = 5416 tokens per page sequence
    assert figure.tokens_per_page == 5416
    assert figure.kv_pages == KV_TOKENS // 5416  # 166
    assert figure.running == 128
    assert figure.reserve == 128
    assert figure.pages == 256


def test_capacity_is_bounded_by_the_kv_cache() -> None:
    figure = page_capacity(settings(MAX_NUM_SEQS=256), 100_000, TEXT_TOKENS)
    assert figure.kv_pages == 18
    assert figure.running == 18
    assert figure.pages == 18 + 18


def test_capacity_reserve_covers_at_least_one_prefill_step() -> None:
    figure = page_capacity(settings(MAX_NUM_SEQS=4), KV_TOKENS, TEXT_TOKENS)
    assert figure.running == 4
    assert figure.reserve == 13  # ceil(16384 / 1320)


def test_capacity_output_budget_follows_the_default_max_tokens() -> None:
    short = page_capacity(settings(ENGINE_DEFAULT_MAX_TOKENS=256), 200_000, TEXT_TOKENS)
    assert short.tokens_per_page == 1280 + 40 + 256
    assert short.kv_pages == 200_000 // 1576


def test_capacity_output_budget_is_its_own_setting_when_given() -> None:
    """ENGINE_CAPACITY_MAX_TOKENS sizes C; requests that carry 0 still get the default."""
    figure = page_capacity(
        settings(ENGINE_DEFAULT_MAX_TOKENS=4096, ENGINE_CAPACITY_MAX_TOKENS=256),
        200_000,
        TEXT_TOKENS,
    )
    assert figure.tokens_per_page == 1280 + 40 + 256


def test_capacity_is_the_engines_not_one_gpus_share_under_tensor_parallel() -> None:
    # vLLM reports the KV cache of the whole TP group (heads are split, blocks are
    # shared): the same token count must give the same figure at TP=1 and TP=2.
    one = page_capacity(settings(MAX_NUM_SEQS=256), 500_000, TEXT_TOKENS)
    two = page_capacity(
        settings(MAX_NUM_SEQS=256, TENSOR_PARALLEL_SIZE=2), 500_000, TEXT_TOKENS
    )
    assert two == one
    assert two.kv_pages == 500_000 // 5416


def test_capacity_never_drops_below_one_page() -> None:
    figure = page_capacity(settings(), 0, TEXT_TOKENS)
    assert figure.running == 1
    assert figure.pages == 1 + 13


# ------------------------------------------------------------ the engine over a fake


async def test_engine_sends_the_page_as_decoded_and_the_chat_text(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    assert isinstance(engine, OcrEngine)
    await engine.start()
    sent = page(max_tokens=777, temperature=0.0)
    result = await engine.recognize(sent)
    assert result.status is PageStatus.OK
    assert result.text == ok().text
    assert result.attempts == 1
    assert result.finish_reason == "stop"
    assert result.prompt_tokens == PAGE_PROMPT_TOKENS  # vLLM gave no count here
    (request,) = client.requests
    # vLLM's processor converts and resizes it (as for raw vLLM): no copy on the way.
    assert request.image is sent.image
    assert request.chat_text.index("<|image_pad|>") < request.chat_text.index("의료")
    assert request.sampling.max_tokens == 777
    assert request.sampling.temperature == 0.0
    assert request.sampling.top_p == 1.0
    assert request.sampling.ignore_eos is False


async def test_start_warms_the_engine_up_with_one_blank_page(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    (warm_up,) = client.warm_ups
    assert warm_up.image.size == (840, 1176)
    assert warm_up.sampling.max_tokens == WARM_UP_TOKENS
    assert warm_up.sampling.temperature == 0.0
    assert client.requests == []


async def test_chat_prompt_is_rendered_once_per_prompt(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    for _ in range(3):
        await engine.recognize(page(prompt="A"))
    await engine.recognize(page(prompt="B"))
    assert client.rendered == ["", "A", "B"]  # "" sizes the capacity figure at start


async def test_max_tokens_cap_uses_the_page_prompt_length(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()], MAX_MODEL_LEN=2048)
    await engine.start()
    await engine.recognize(page(max_tokens=4096))
    # 1260 visual tokens + 39 text tokens (placeholder excluded) leave 749
    assert client.requests[0].sampling.max_tokens == 2048 - PAGE_PROMPT_TOKENS


@pytest.mark.parametrize("listening", [False, True])
async def test_the_prompt_tokens_are_vllms_own_count(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
    listening: bool,
) -> None:
    """vLLM's ``prompt_token_ids`` hold the image's visual tokens: its count wins."""
    engine, _ = make_engine([replace(ok(), prompt_tokens=1302)])
    await engine.start()
    events: list[PageEvent] = []
    result = await engine.recognize(page(), events.append if listening else None)
    assert (result.prompt_tokens, result.finish_reason) == (1302, "stop")


async def test_a_sliver_page_fails_before_it_reaches_the_engine(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    with pytest.raises(PageFailedError, match="aspect ratio"):
        await engine.recognize(page(10_000, 20))
    assert client.requests == []


async def test_truncated_page_is_retried_hotter_then_flagged(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([cut()], ENGINE_QUALITY_RETRIES=2)
    await engine.start()
    result = await engine.recognize(page())
    assert result.status is PageStatus.TRUNCATED
    assert result.finish_reason == "length"
    assert result.attempts == 3
    assert [r.sampling.temperature for r in client.requests] == pytest.approx(
        [0.0, 0.2, 0.4]
    )
    assert [r.sampling.top_p for r in client.requests] == [1.0, 0.95, 0.95]


async def test_retry_that_succeeds_returns_ok(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([LOOP, ok("clean text")], ENGINE_QUALITY_RETRIES=2)
    await engine.start()
    result = await engine.recognize(page())
    assert (result.status, result.text, result.attempts) == (
        PageStatus.OK,
        "clean text",
        2,
    )
    assert len(client.requests) == 2


async def test_looping_page_keeps_the_best_attempt(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, _ = make_engine(
        [
            replace(LOOP, prompt_tokens=1299),
            replace(cut("partial but real"), prompt_tokens=1300),
            replace(LOOP, finish_reason="stop", prompt_tokens=1301),
        ],
        ENGINE_QUALITY_RETRIES=2,
    )
    await engine.start()
    result = await engine.recognize(page())
    assert (result.status, result.text) == (PageStatus.TRUNCATED, "partial but real")
    assert result.attempts == 3
    # the reason and the prompt of the attempt whose text it is, not the last one's
    assert (result.finish_reason, result.prompt_tokens) == ("length", 1300)


async def test_looping_page_is_flagged_repetitive_never_ok(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, _ = make_engine([LOOP], ENGINE_QUALITY_RETRIES=1)
    await engine.start()
    result = await engine.recognize(page())
    assert result.status is PageStatus.REPETITIVE
    assert result.attempts == 2


async def test_no_retries_and_ignore_eos_for_benchmarks(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine(
        [cut()], ENGINE_QUALITY_RETRIES=0, ENGINE_IGNORE_EOS=True
    )
    await engine.start()
    result = await engine.recognize(page(max_tokens=256))
    assert result.status is PageStatus.TRUNCATED
    assert len(client.requests) == 1
    assert client.requests[0].sampling.ignore_eos is True


async def test_client_errors_pass_through_as_pipeline_errors(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, _ = make_engine([PageFailedError("engine rejected the page")])
    await engine.start()
    with pytest.raises(PageFailedError):
        await engine.recognize(page())


async def test_dead_engine_is_fatal_and_unhealthy(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    assert engine.health().loaded
    client.dead = True
    assert not engine.health().loaded
    with pytest.raises(EngineDeadError):
        await engine.recognize(page())
    assert client.requests == []


async def test_health_capacity_and_metrics_follow_start_and_close(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    registry = CollectorRegistry()
    client = FakeVllmClient([ok()])

    async def connect(metrics: EngineMetrics) -> VllmClient:
        metrics.observe_scheduler(running=3, waiting=2, kv_cache_usage=0.25)
        metrics.add_tokens(prompt_tokens=1300, generation_tokens=0)
        metrics.add_tokens(prompt_tokens=0, generation_tokens=256)
        return client

    engine = VllmPageEngine(settings(MAX_NUM_SEQS=64), registry, connect)
    assert engine.health().loaded is False
    with pytest.raises(RuntimeError, match="after start"):
        engine.capacity()
    await engine.start()
    health = engine.health()
    assert (health.loaded, health.gpu_available) == (True, True)
    assert engine.capacity() == 64 + 64
    assert registry.get_sample_value("ocr_engine_page_capacity") == 128
    assert engine_figures(registry) == (3, 2, 0.25, 1300, 256)
    await engine.close()
    assert client.closed
    assert engine.health().loaded is False


async def test_pages_run_concurrently_through_the_client(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    results = await asyncio.gather(
        *(engine.recognize(page(900 + i, 1200)) for i in range(8))
    )
    assert all(r.status is PageStatus.OK for r in results)
    assert len(client.requests) == 8


# ------------------------------------------------ vLLM's stats on the worker's registry


@dataclass
class FakeFinished:
    """A vLLM v1 ``FinishedRequestStats`` (only what the metrics read)."""

    queued_time: float
    num_prompt_tokens: int = 1300


@dataclass
class FakeIteration:
    """A vLLM v1 ``IterationStats``: one engine step's tokens and finished requests."""

    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    finished_requests: list[object] = field(default_factory=list)


@dataclass
class FakeScheduler:
    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0


def buckets(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """A histogram's cumulative bucket counts by their ``le`` label."""
    return {
        sample.labels["le"]: sample.value
        for family in registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_bucket"
    }


QUEUE_BOUNDS = ["0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0", "12.0"]
QUEUE_BOUNDS += ["20.0", "30.0", "60.0", "120.0", "+Inf"]


def test_engine_steps_feed_the_gauges_counters_and_queue_times() -> None:
    registry = CollectorRegistry()
    metrics = EngineMetrics(registry)
    metrics.record(FakeScheduler(3, 5, 0.75), FakeIteration(1300, 7))
    metrics.record(
        None,
        FakeIteration(
            0, 9, [FakeFinished(0.02), FakeFinished(3.0), FakeFinished(90.0)]
        ),
    )
    sample = registry.get_sample_value
    assert engine_figures(registry) == (3, 5, 0.75, 1300, 16)
    assert sample("ocr_engine_queue_seconds_count") == 3
    assert sample("ocr_engine_queue_seconds_sum") == pytest.approx(93.02)
    queue = buckets(registry, "ocr_engine_queue_seconds")
    assert list(queue) == QUEUE_BOUNDS  # the bounds the alert rules are written on
    assert (queue["0.05"], queue["2.0"], queue["4.0"], queue["60.0"]) == (1, 1, 2, 2)
    assert (queue["120.0"], queue["+Inf"]) == (3, 3)


def test_stats_without_per_request_figures_record_only_what_they_have() -> None:
    """vLLM's stats objects are untyped here: a missing list or figure, or a negative
    one (a request aborted before it was scheduled), is left out, never an error."""

    @dataclass
    class BareIteration:
        num_prompt_tokens: int = 10
        num_generation_tokens: int = 2

    @dataclass
    class BareFinished:
        num_prompt_tokens: int = 10

    registry = CollectorRegistry()
    metrics = EngineMetrics(registry)
    metrics.record(None, None)
    metrics.record(None, BareIteration())
    metrics.record(None, FakeIteration(finished_requests=[BareFinished()]))
    metrics.record(None, FakeIteration(finished_requests=[FakeFinished(-1.0)]))
    sample = registry.get_sample_value
    assert sample("ocr_engine_prompt_tokens_total") == 10
    assert sample("ocr_engine_queue_seconds_count") == 0


def test_real_engine_module_imports_only_with_vllm() -> None:
    """Without vLLM (CI) the import raises ImportError, which build_engine reports."""
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError):
            importlib.import_module("consumers.engines.vllm")
    else:
        module = importlib.import_module("consumers.engines.vllm")
        assert issubclass(module.VllmEngine, VllmPageEngine)


# ------------------------------------------------- streaming and the transient path


def deltas(events: list[PageEvent], attempt: int) -> str:
    return "".join(
        e.text for e in events if isinstance(e, TextDelta) and e.attempt == attempt
    )


async def test_without_a_listener_only_the_final_output_is_asked_for(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    result = await engine.recognize(page())
    assert result.text == ok().text
    assert client.streamed == [False]


async def test_a_listener_gets_the_text_as_it_is_generated(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, client = make_engine([ok()])
    await engine.start()
    events: list[PageEvent] = []
    result = await engine.recognize(page(), events.append)
    assert client.streamed == [True]
    assert len(events) > 1
    assert all(isinstance(e, TextDelta) and e.text for e in events)
    assert deltas(events, 1) == result.text == ok().text
    assert result.token_count == ok().output_tokens  # the deltas' tokens add up


async def test_a_quality_retry_restarts_the_stream(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    engine, _ = make_engine([LOOP, cut(), ok("clean text")], ENGINE_QUALITY_RETRIES=2)
    await engine.start()
    events: list[PageEvent] = []
    result = await engine.recognize(page(), events.append)
    assert (result.status, result.text, result.attempts) == (
        PageStatus.OK,
        "clean text",
        3,
    )
    restarts = [e for e in events if isinstance(e, StreamRestarted)]
    assert restarts == [
        StreamRestarted(attempt=2, reason="REPETITIVE"),
        StreamRestarted(attempt=3, reason="TRUNCATED"),
    ]
    assert deltas(events, 1) == LOOP.text
    assert deltas(events, 2) == cut().text
    assert deltas(events, 3) == "clean text"
    # each restart comes before the text of the attempt it starts
    assert events.index(restarts[1]) < events.index(TextDelta("clean", 3))


@pytest.mark.parametrize("listening", [False, True])
@pytest.mark.parametrize("reason", ["error", "abort"])
async def test_a_request_vllm_ended_unfinished_is_transient(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
    reason: str,
    listening: bool,
) -> None:
    engine, _ = make_engine([Generation("half a pa", 3, reason)])
    await engine.start()
    events: list[PageEvent] = []
    with pytest.raises(EngineBusyError, match="unfinished"):
        await engine.recognize(page(), events.append if listening else None)


async def test_a_busy_engine_is_retried_with_backoff_then_read(
    make_engine: Callable[..., tuple[VllmPageEngine, FakeVllmClient]],
) -> None:
    """The transient path from the client seam to the page: vLLM's retryable error
    becomes EngineBusyError, the page recognizer backs off and asks again."""
    engine, client = make_engine(
        [Generation("", 0, "error"), replace(ok(), prompt_tokens=1302)]
    )
    await engine.start()
    registry = CollectorRegistry()
    seen: list[PageEvent] = []

    def hook(request: OcrRequest, number: int, event: PageEvent) -> None:
        seen.append(event)

    recognizer = PageRecognizer(
        engine,
        WorkerMetrics(registry, engine.name),
        PageOptions(
            default_prompt=DEFAULT_PROMPT,
            default_max_tokens=512,
            retry=RetryPolicy(attempts=3, base_s=0.001, max_s=0.002),
        ),
        on_event=hook,
    )
    decoded = Page(1, Image.new("L", (1240, 1754), 255), None)
    text = await recognizer.recognize(
        consumer_record(b""),
        sender_request(stream=True),
        decoded,
        1,
        PagePlaces.admit(PageBudget(limit=1)),
    )
    assert (text.status, text.text) == (PageStatus.OK, ok().text)
    # the page carries what the engine counted and why it stopped
    assert (text.token_count, text.prompt_token_count) == (ok().output_tokens, 1302)
    assert text.finish_reason == "stop"
    assert len(client.requests) == 2
    assert registry.get_sample_value("ocr_retries_total", {"reason": "transient"}) == 1
    assert StreamRestarted(attempt=1, reason="ENGINE_BUSY") in seen
    assert deltas(seen, 1) == ok().text  # what came after the restart


def test_the_collector_keeps_the_last_final_output() -> None:
    collector = GenerationCollector()
    assert not collector.streams
    collector.add([])
    collector.add([FakeCompletion("환자", (1, 2), None)])
    collector.add([FakeCompletion("환자 성명", (1, 2, 3), "stop")])
    assert collector.generation() == Generation("환자 성명", 3, "stop")


def test_the_collector_counts_the_prompt_vllm_tokenized() -> None:
    """``prompt_token_ids`` come with every output (the image's tokens expanded);
    an output without them (None: prompt embeddings) keeps the count known."""
    collector = GenerationCollector(lambda text: None)
    collector.add([FakeCompletion("환자", (1,))], list(range(1299)))
    collector.add([FakeCompletion(" 성명", (2,), "stop")], None)
    assert collector.generation() == Generation("환자 성명", 2, "stop", 1299)


def test_the_collector_joins_deltas_and_streams_them() -> None:
    pieces: list[str] = []
    collector = GenerationCollector(pieces.append)
    assert collector.streams
    for completion in [
        FakeCompletion("환자", (1,)),
        FakeCompletion("", (2,)),  # a token that completes no character yet
        FakeCompletion(" 성명", (3,), "length"),
    ]:
        collector.add([completion])
    assert collector.generation() == Generation("환자 성명", 3, "length")
    assert pieces == ["환자", " 성명"]


def test_a_request_without_output_fails_the_page() -> None:
    with pytest.raises(PageFailedError, match="no output"):
        GenerationCollector().generation()


def engine_figures(registry: CollectorRegistry) -> tuple[float | None, ...]:
    """Requests running and waiting, KV-cache usage, prompt and generated tokens, as
    the registry has them."""
    return tuple(
        registry.get_sample_value(f"ocr_engine_{name}")
        for name in (
            "requests_running",
            "requests_waiting",
            "kv_cache_usage_ratio",
            "prompt_tokens_total",
            "generation_tokens_total",
        )
    )
