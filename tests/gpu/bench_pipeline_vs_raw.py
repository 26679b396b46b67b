"""Pages/s of raw vLLM vs the whole medocr pipeline, same engine settings, one GPU host.

One invocation runs, one after the other (one GPU):

1. **raw**: a child process with vLLM's offline ``LLM.generate`` over N generated pages
   (decoded before the clock starts, vLLM's processor resizes them: naive offline use);
2. **pipeline**: the embedded broker (``medocr broker``), ``medocr worker`` with
   ``OCR_ENGINE=vllm`` in its own process, and ``OcrClient.submit`` (the path of
   ``medocr publish --wait``) of the same N page files from this process, each
   awaiting its result.

Both build the engine from the same ``VllmSettings`` (``engine_kwargs``), greedy, with
``ignore_eos`` so every page generates exactly ``--max-tokens`` tokens (dummy weights
emit EOS at random) and no quality retries (every page ends on ``length``). Each phase
warms up on ``--warmup`` other pages first. The raw clock runs from ``generate()`` to
its return; the pipeline clock from the first request's ``submitted_at`` (stamped when
its request is built) to the last result read from the output topic. The time from
opening the client is reported as well (``wall_from_publish_command_s``).
``--repeats N`` times each length N times per phase (one engine start, lengths
interleaved) and reports the ratio of the phases' mean pages/s, with each pair's ratio
beside it: single runs scatter by about ±2% on an H100 that runs at its power limit.

On the GPU host (after the bundle's install.sh; weight-less model in /tmp/model)::

    source /tmp/bundle/env.sh
    python3 -m tests.gpu.bench_pipeline_vs_raw --model /tmp/model --load-format dummy \\
        --pages 256 --max-tokens 256 1024 --out-dir tests/gpu/results

With a real model, e.g. ``--model Qwen/Qwen2.5-VL-7B-Instruct --load-format auto``.
Writes ``bench-*.json`` (settings, per-run numbers, completion times) and a PNG of
pages/s over time; ``--plot-only FILE.json`` redraws the plot from a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, get_args

from consumers.local.broker import free_port
from consumers.settings import DEFAULT_PROMPT, KafkaSettings, VllmSettings
from producers.client import OcrClient
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS, ProducerOptions, Topics
from tests.gpu.doc_pages import write_pages
from tests.gpu.sampler import Sampler

RESULTS = Path(__file__).parent / "results"
RESULT_TOPIC = KafkaSettings().result_topic  # the worker's default


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def engine_env(args: argparse.Namespace) -> dict[str, str]:
    """The engine settings as the worker reads them; raw vLLM parses the same dict."""
    return {
        "MODEL_NAME": args.model,
        "TENSOR_PARALLEL_SIZE": str(args.tensor_parallel_size),
        "GPU_MEMORY_UTIL": str(args.gpu_mem),
        "MAX_MODEL_LEN": str(args.max_model_len),
        "MAX_NUM_SEQS": str(args.max_num_seqs),
        "ENGINE_MAX_NUM_BATCHED_TOKENS": str(args.max_num_batched_tokens),
        "ENGINE_LOAD_FORMAT": args.load_format,
        "ENGINE_MAX_PIXELS": str(args.max_pixels),
        "ENGINE_DTYPE": args.dtype,
        "ENGINE_QUANTIZATION": args.quantization,
        "ENGINE_KV_CACHE_DTYPE": args.kv_cache_dtype,
        "ENGINE_ENFORCE_EAGER": str(args.enforce_eager).lower(),
        "ENGINE_QUALITY_RETRIES": "0",
        "ENGINE_IGNORE_EOS": "true",
    }


def page_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The folders of the warm-up and the timed pages under ``--pages-dir``."""
    root = Path(args.pages_dir)
    return root / "warm", root / "timed"


def page_sets(args: argparse.Namespace) -> None:
    """Warm-up pages 0..W-1 and timed pages W..W+N-1, each in its own folder."""
    warm_dir, timed_dir = page_dirs(args)
    warm = write_pages(warm_dir, range(args.warmup))
    timed = write_pages(timed_dir, range(args.warmup, args.warmup + args.pages))
    log(f"pages: {len(warm)} warm-up, {len(timed)} timed in {args.pages_dir}")


def run_summary(
    tag: str, max_tokens: int, wall_s: float, done_s: list[float], out_tokens: int
) -> dict[str, Any]:
    n = len(done_s)
    return {
        "tag": tag,
        "max_tokens": max_tokens,
        "pages": n,
        "wall_s": round(wall_s, 3),
        "pages_per_s": round(n / wall_s, 3) if wall_s > 0 else 0.0,
        "out_tokens": out_tokens,
        "out_tok_per_s": round(out_tokens / wall_s, 1) if wall_s > 0 else 0.0,
        "done_s": [round(t, 3) for t in sorted(done_s)],
    }


def schedule(args: argparse.Namespace) -> list[tuple[int, int]]:
    """The timed runs of one phase, in order: (repeat, max_tokens), lengths interleaved."""
    return [(rep, size) for rep in range(args.repeats) for size in args.max_tokens]


# ------------------------------------------------------------------ raw vLLM (child)


def raw_main(args: argparse.Namespace) -> int:
    """Child process: offline LLM.generate over the timed pages, JSON to --raw-json."""
    from PIL import Image
    from vllm import LLM, SamplingParams

    from consumers.engines.vllm import PROMPT_SENTINEL, load_chat_template
    from consumers.engines.vllm_requests import engine_kwargs

    settings = VllmSettings.model_validate(engine_env(args))
    kwargs = engine_kwargs(settings)
    log("raw engine kwargs", kwargs)
    started = time.perf_counter()
    llm = LLM(**kwargs)
    engine_start_s = time.perf_counter() - started
    log(f"raw engine started in {engine_start_s:.1f}s")
    template, _ = load_chat_template(args.model)
    chat = template.replace(PROMPT_SENTINEL, DEFAULT_PROMPT)

    def load(folder: Path) -> list[Image.Image]:
        images = []
        for path in page_files(folder):
            with Image.open(path) as image:
                images.append(image.convert("RGB"))  # decoded before the clock starts
        return images

    warm_dir, timed_dir = page_dirs(args)
    warm, timed = load(warm_dir), load(timed_dir)

    def requests(images: list[Image.Image]) -> list[dict[str, Any]]:
        return [{"prompt": chat, "multi_modal_data": {"image": im}} for im in images]

    def sampling(max_tokens: int) -> Any:
        return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    started = time.perf_counter()
    llm.generate(requests(warm), sampling(16), use_tqdm=False)
    log(f"raw warm-up {len(warm)} pages {time.perf_counter() - started:.1f}s")
    runs = []
    for repeat, max_tokens in schedule(args):
        done: list[float] = []
        epoch, clock = time.time(), time.perf_counter()
        bar = completion_clock(done, clock)
        outputs = llm.generate(requests(timed), sampling(max_tokens), use_tqdm=bar)
        wall = time.perf_counter() - clock
        if len(done) != len(outputs):
            raise RuntimeError(
                f"{len(done)} completions timed for {len(outputs)} pages"
            )
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        run = run_summary("raw", max_tokens, wall, done, out_tokens)
        run["repeat"] = repeat
        run["t0_epoch"] = round(epoch, 3)
        run["prompt_tokens_per_page"] = round(
            sum(len(o.prompt_token_ids) for o in outputs) / len(outputs), 1
        )
        log("RESULT", json.dumps({k: v for k, v in run.items() if k != "done_s"}))
        runs.append(run)
    Path(args.raw_json).write_text(
        json.dumps({"engine_start_s": engine_start_s, "runs": runs})
    )
    return 0


def completion_clock(done: list[float], start: float) -> Callable[..., Any]:
    """A tqdm factory for ``LLM.generate`` that records when each request finishes."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    class Clock(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            if str(self.desc).startswith("Processed"):  # not the "Adding requests" bar
                done.extend([time.perf_counter() - start] * int(n or 0))
            return super().update(n)  # type: ignore[no-any-return]

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    def bar(*args: Any, **kwargs: Any) -> Clock:
        return Clock(*args, file=sink, **kwargs)

    return bar


def run_raw(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    raw_json = out_dir / "raw.json"
    raw_json.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "tests.gpu.bench_pipeline_vs_raw", "--raw-child"]
    argv += [*sys.argv[1:], "--raw-json", str(raw_json)]
    with open(out_dir / "raw.log", "w") as raw_log:
        child = subprocess.Popen(argv, stdout=raw_log, stderr=subprocess.STDOUT)
        sampler = Sampler(lambda: {child.pid}, args.sample_interval)
        sampler.start()
        try:
            rc = child.wait(timeout=args.phase_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            rc = child.wait()
        finally:
            samples = sampler.stop()
    if rc != 0 or not raw_json.exists():
        raise RuntimeError(
            f"raw vLLM run failed (exit {rc}); see {out_dir / 'raw.log'}"
        )
    result: dict[str, Any] = json.loads(raw_json.read_text())
    raw_json.unlink()
    result["samples"] = samples_during(samples, result["runs"])
    return result


def samples_during(
    samples: list[dict[str, Any]], runs: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The samples taken while a timed run was going (plus one second either side)."""
    spans = [(run["t0_epoch"] - 1, run["t0_epoch"] + run["wall_s"] + 1) for run in runs]
    return [s for s in samples if any(a <= s["t"] <= b for a, b in spans)]


# ------------------------------------------------------------------ pipeline


class Pipeline:
    """Broker and worker processes, and a results reader on the output topic.

    ``workers`` holds one environment overlay per ``medocr worker`` process (e.g.
    ``CUDA_VISIBLE_DEVICES``); all of them join one consumer group.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        out_dir: Path,
        workers: Sequence[Mapping[str, str]] = ({},),
    ) -> None:
        if not workers:
            raise ValueError("a pipeline needs at least one worker")
        self.args = args
        self.out_dir = out_dir
        self.kafka_port = free_port()
        self.worker_envs = [dict(overlay) for overlay in workers]
        self.sidecar_ports = [free_port() for _ in self.worker_envs]
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "KAFKA_FETCH_MAX_WAIT_MS": str(EMBEDDED_BROKER_FETCH_MAX_WAIT_MS),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.publisher_pid: int | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[TextIO] = []

    def client(self) -> OcrClient:
        """An ``OcrClient`` of this pipeline's broker (reading every result partition)."""
        return OcrClient(
            {"bootstrap_servers": self.bootstrap},
            Topics(results=RESULT_TOPIC),
            ProducerOptions(enable_idempotence=False),
            fetch_max_wait_ms=EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
        )

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        out = open(self.out_dir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(out)
        cmd = [sys.executable, "-m", "consumers", *argv]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def start(self) -> float:
        partitions = str(self.args.partitions)
        broker = self.spawn(
            "broker",
            ["broker", "--port", str(self.kafka_port), "--partitions", partitions],
            self.env,
        )
        await self._until(
            lambda: "broker ready" in self._log_text("broker"), broker, 60
        )
        started = time.perf_counter()
        for index, (overlay, port) in enumerate(
            zip(self.worker_envs, self.sidecar_ports, strict=True)
        ):
            worker_env = {
                **self.env,
                **engine_env(self.args),
                "OCR_ENGINE": self.args.engine,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "OCR_TOPIC_PARTITIONS": partitions,
                "OCR_BATCH_MAX_RECORDS": str(self.args.batch_max_records),
                "OCR_FILE_URI_ROOTS": self.args.pages_dir,  # absolute, see --pages-dir
                **overlay,
            }
            name = "worker" if len(self.worker_envs) == 1 else f"worker-{index}"
            self.workers.append(self.spawn(name, ["worker"], worker_env))
        for worker, port in zip(self.workers, self.sidecar_ports, strict=True):
            ready = functools.partial(self._ready, port)
            await self._until(ready, worker, self.args.phase_timeout)
        return time.perf_counter() - started

    def _log_text(self, name: str) -> str:
        return (self.out_dir / f"{name}.log").read_text(errors="replace")

    def _ready(self, port: int) -> bool:
        url = f"http://127.0.0.1:{port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def _until(
        self, check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.args!r} not ready after {timeout_s}s")
            await asyncio.sleep(0.5)

    async def run(self, folder: Path, prefix: str, max_tokens: int) -> dict[str, Any]:
        """Publish every page of ``folder`` and wait for all their results."""
        from producers.publisher import RequestOptions, build_request

        options = RequestOptions(
            max_tokens=max_tokens,
            by_reference=self.args.by_reference,
            id_prefix=prefix,
        )
        arrivals: dict[str, tuple[float, Any]] = {}

        async def submit_and_wait(client: OcrClient, path: Path) -> None:
            request = await asyncio.to_thread(build_request, path, options)
            reply = await client.submit(request)
            result = await reply.result()
            arrivals[result.document_id] = (time.time(), result)

        self.publisher_pid = os.getpid()  # the client publishes from this process
        launched = time.time()
        async with self.client() as client:
            await asyncio.wait_for(
                asyncio.gather(
                    *(submit_and_wait(client, path) for path in page_files(folder))
                ),
                self.args.phase_timeout,
            )
        first_submit = min(r.submitted_at.timestamp() for _, r in arrivals.values())
        done = [t - first_submit for t, _ in arrivals.values()]
        results = [r for _, r in arrivals.values()]
        run = run_summary(
            "pipeline", max_tokens, max(done), done, sum(r.token_count for r in results)
        )
        run["t0_epoch"] = round(first_submit, 3)
        run["wall_from_publish_command_s"] = round(
            max(done) + first_submit - launched, 3
        )
        run["document_status"] = _count(r.status.value for r in results)
        run["page_status"] = _count(p.status for r in results for p in r.pages)
        return run

    def pids(self) -> set[int]:
        """The processes whose CPU the sampler reads: broker, workers, publisher."""
        pids = {proc.pid for proc in self.procs}
        if self.publisher_pid is not None:
            pids.add(self.publisher_pid)
        return pids

    def engine_figures(self) -> dict[str, float]:
        """The engine gauges and token counters of the first worker's sidecar."""
        url = f"http://127.0.0.1:{self.sidecar_ports[0]}/metrics"
        wanted = {
            "ocr_engine_requests_running": "running",
            "ocr_engine_requests_waiting": "waiting",
            "ocr_engine_prompt_tokens_total": "prompt_tokens",
            "ocr_engine_generation_tokens_total": "generation_tokens",
        }
        figures: dict[str, float] = {}
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            for line in response.read().decode().splitlines():
                name, _, value = line.partition(" ")
                if name in wanted:
                    figures[wanted[name]] = float(value)
        return figures

    def stop_workers(self) -> None:
        """SIGTERM every worker (drain, commit, exit); the broker keeps running."""
        _terminate(self.workers)

    def stop(self) -> None:
        _terminate(self.workers)  # workers first: drain, commit, exit
        _terminate(list(reversed(self.procs)))
        for out in self.logs:
            out.close()


def _terminate(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def page_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("page_*.png"))


def _count(values: Any) -> dict[str, int]:
    return dict(Counter(str(getattr(value, "value", value)) for value in values))


async def run_pipeline(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    pipeline = Pipeline(args, out_dir)
    warm_dir, timed_dir = page_dirs(args)
    sampler = Sampler(pipeline.pids, args.sample_interval, pipeline.engine_figures)
    runs: list[dict[str, Any]] = []
    try:
        start_s = await pipeline.start()
        log(f"pipeline worker ready in {start_s:.1f}s")
        started = time.perf_counter()
        await pipeline.run(warm_dir, "warm-", 16)
        log(
            f"pipeline warm-up {args.warmup} pages {time.perf_counter() - started:.1f}s"
        )
        sampler.start()
        for repeat, max_tokens in schedule(args):
            prefix = f"t{max_tokens}-r{repeat}-"
            run = await pipeline.run(timed_dir, prefix, max_tokens)
            run["repeat"] = repeat
            log("RESULT", json.dumps({k: v for k, v in run.items() if k != "done_s"}))
            runs.append(run)
    finally:
        samples = sampler.stop()
        pipeline.stop()
    return {
        "worker_ready_s": start_s,
        "runs": runs,
        "samples": samples_during(samples, runs),
    }


# ------------------------------------------------------------------ report


def plot(results: dict[str, Any], png: Path, bin_s: float = 1.0) -> None:
    """Pages/s over time (completions per ``bin_s``, 3-bin moving average), and below,
    when the run was sampled, the GPU's utilisation and the engine's queue over time."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    sizes = list(dict.fromkeys(run["max_tokens"] for run in results["raw"]["runs"]))
    sampled = all(results[phase].get("samples") for phase in ("raw", "pipeline"))
    rows = 2 if sampled else 1
    fig, axes = plt.subplots(
        rows, len(sizes), figsize=(6 * len(sizes), 4 * rows), squeeze=False
    )
    for column, size in enumerate(sizes):
        ax = axes[0][column]
        for phase, style, colour in (("raw", "-", "C0"), ("pipeline", "--", "C1")):
            runs = [r for r in results[phase]["runs"] if r["max_tokens"] == size]
            for index, run in enumerate(runs):
                xs, rates = rate_curve(run["done_s"], bin_s)
                label = f"{phase}: {run['pages_per_s']:.2f} pages/s"
                if len(runs) > 1:
                    label = f"{phase} #{index + 1}: {run['pages_per_s']:.2f} pages/s"
                alpha = 1.0 if index == 0 else 0.45
                ax.plot(xs, rates, style, color=colour, alpha=alpha, label=label)
        ax.set_title(f"max_tokens {size}, {results['config']['pages']} pages")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("pages/s (completions, 3 s average)")
        ax.legend()
        ax.grid(alpha=0.3)
        if sampled:
            plot_samples(axes[1][column], results, size)
    fig.suptitle(f"raw vLLM vs medocr pipeline ({results['config']['device']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_samples(ax: Any, results: dict[str, Any], size: int) -> None:
    """GPU utilisation of both phases' first run of ``size``, and the pipeline engine's
    requests, over time."""
    queue = ax.twinx()
    for phase, style in (("raw", "-"), ("pipeline", "--")):
        run = next(r for r in results[phase]["runs"] if r["max_tokens"] == size)
        start, end = run["t0_epoch"], run["t0_epoch"] + run["wall_s"]
        samples = [s for s in results[phase]["samples"] if start - 1 <= s["t"] <= end]
        times = [s["t"] - start for s in samples]
        ax.plot(times, [s.get("gpu_util", 0) for s in samples], style, label=phase)
        if phase == "pipeline":
            held = [s.get("running", 0) + s.get("waiting", 0) for s in samples]
            queue.plot(times, held, ":", color="grey", label="pipeline: in engine")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("GPU utilisation % (NVML)")
    queue.set_ylabel("requests in the engine (running + waiting)")
    ax.legend(loc="lower left")
    queue.legend(loc="lower right")
    ax.grid(alpha=0.3)


def rate_curve(
    done_s: Sequence[float], bin_s: float
) -> tuple[list[float], list[float]]:
    """Completions per second in ``bin_s`` bins (3-bin moving average), for plots."""
    bins = int(max(done_s) / bin_s) + 1
    counts = [0.0] * bins
    for t in done_s:
        counts[min(int(t / bin_s), bins - 1)] += 1
    smooth = [
        sum(counts[max(0, i - 1) : i + 2]) / len(counts[max(0, i - 1) : i + 2])
        for i in range(bins)
    ]
    return [(i + 0.5) * bin_s for i in range(bins)], [c / bin_s for c in smooth]


def device_name() -> str:
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return "unknown"


def summarize(results: dict[str, Any]) -> list[str]:
    """Per length: every repeat's pages/s, and the ratio of the phases' means.

    ``ratios`` holds the ratio of means (one figure per length); ``ratio_runs`` the
    ratio of each repeat's pair, raw's i-th run against the pipeline's i-th.
    """
    lines = ["max_tokens  raw pages/s (runs)  pipeline pages/s (runs)  ratio of means"]
    for size in dict.fromkeys(r["max_tokens"] for r in results["raw"]["runs"]):
        raw, pipe = (
            [
                r["pages_per_s"]
                for r in results[phase]["runs"]
                if r["max_tokens"] == size
            ]
            for phase in ("raw", "pipeline")
        )
        ratio = statistics.fmean(pipe) / statistics.fmean(raw)
        results.setdefault("ratios", {})[str(size)] = round(ratio, 3)
        pairs = [round(p / r, 3) for r, p in zip(raw, pipe, strict=False)]
        results.setdefault("ratio_runs", {})[str(size)] = pairs
        lines.append(
            f"{size:>10}  {statistics.fmean(raw):>7.2f} {_runs(raw):<12}"
            f"  {statistics.fmean(pipe):>7.2f} {_runs(pipe):<16}  {ratio:5.3f}"
            f"  (pairs {', '.join(f'{x:.3f}' for x in pairs)})"
        )
    return lines


def _runs(values: Sequence[float]) -> str:
    return "(" + " ".join(f"{v:.2f}" for v in values) + ")"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_child:
        return raw_main(args)
    if args.plot_only:
        source = Path(args.plot_only)
        plot(json.loads(source.read_text()), source.with_suffix(".png"))
        return 0
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page_sets(args)
    results: dict[str, Any] = {
        "config": {
            **vars(args),
            "device": device_name(),
            "engine_env": engine_env(args),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = out_dir / f"bench-{stamp}.json"
    for phase in args.phases:  # in the order given: e.g. pipeline first
        log(f"{phase} phase")
        if phase == "raw":
            results["raw"] = run_raw(args, out_dir)
        else:
            results["pipeline"] = asyncio.run(run_pipeline(args, out_dir))
        target.write_text(json.dumps(results, indent=1))
    if "raw" not in results or "pipeline" not in results:
        log(f"results in {target}")
        return 0
    for line in summarize(results):
        log(line)
    target.write_text(json.dumps(results, indent=1))
    try:
        plot(results, target.with_suffix(".png"))
    except ImportError:
        log(f"matplotlib missing: plot later with --plot-only {target}")
    log(f"results in {target}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else ""
    )
    add_pipeline_args(parser)
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs of each length per phase (one engine start), interleaved",
    )
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["raw", "pipeline"],
        default=["raw", "pipeline"],
        help="phases to run, in this order",
    )
    parser.add_argument("--plot-only", default="", help="redraw the PNG of a JSON file")
    parser.add_argument("--raw-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-json", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """Engine, page and pipeline options that ``engine_env`` and ``Pipeline`` read
    (each script adds ``--tensor-parallel-size`` its own way)."""
    parser.add_argument("--model", default="/tmp/model")
    parser.add_argument("--load-format", default="dummy")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--quantization",
        default="",
        help="ENGINE_QUANTIZATION, e.g. fp8 (weights quantized at load); "
        "empty: the model's own weights",
    )
    parser.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=get_args(VllmSettings.model_fields["kv_cache_dtype"].annotation),
        help="ENGINE_KV_CACHE_DTYPE",
    )
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--pages-dir", default="/tmp/medocr-bench-pages")
    parser.add_argument("--max-num-seqs", type=int, default=128)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--gpu-mem", type=float, default=0.85)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--batch-max-records", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--by-reference",
        action="store_true",
        help="publish file:// URIs instead of inlining each page's bytes in Kafka",
    )
    parser.add_argument("--phase-timeout", type=float, default=420.0)
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=0.25,
        help="seconds between GPU/CPU samples (kept for the timed runs only)",
    )
    parser.add_argument(
        "--engine", default="vllm", help="tesseract: debug the Kafka part"
    )


if __name__ == "__main__":
    sys.exit(main())
