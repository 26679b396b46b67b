"""Two GPUs: tensor parallel 2 vs 1, and two workers in one consumer group vs one.

One invocation runs, each on a fresh embedded broker and the same pages (``--runs``):

- ``single``: one ``medocr worker``, ``CUDA_VISIBLE_DEVICES=0``, TP=1;
- ``tp2``: one worker over both GPUs, ``CUDA_VISIBLE_DEVICES=0,1``,
  ``TENSOR_PARALLEL_SIZE=2``;
- ``pair``: two workers, ``CUDA_VISIBLE_DEVICES=0`` and ``=1``, TP=1 each, in one
  consumer group on an input topic of ``--partitions`` (>= 8) partitions.

Engine settings are those of ``bench_pipeline_vs_raw`` (``engine_env``): greedy,
``ENGINE_IGNORE_EOS=true``, no quality retries, ``--max-tokens`` (256) per page. Each run
warms up on ``--warmup`` other pages, then times N pages from the first request's
``submitted_at`` to the last result read back. Afterwards the workers are stopped
(drain, commit) and the result topic is read again from where the run began: every
document must have exactly one OK result; extra results are counted as duplicates,
documents without one as missing. Ratios: tp2 / single and pair / single.

Every worker gets NVLink multicast switched off (``NO_MULTICAST``), as the device notes
ask for the multi-GPU hosts. On the 2-GPU host, after the bundle's install.sh::

    source /tmp/bundle/env.sh
    python3 -m tests.gpu.bench_two_gpus --pages 256 --out-dir "$OUT"

``--runs`` picks a subset; results go to ``--json`` (merged with runs already in it,
so a plan split over two commands ends in one file) and a PNG beside it.
``--engine tesseract --pages 32`` exercises the processes and Kafka parts on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.gpu.bench_pipeline_vs_raw import (
    RESULT_TOPIC,
    RESULTS,
    Pipeline,
    add_pipeline_args,
    engine_env,
    log,
    page_dirs,
    page_files,
    page_sets,
    rate_curve,
)

# NVLink multicast can take a shared host's GPUs out of service: off in NCCL, PyTorch's
# symmetric memory and NVSHMEM, and vLLM's symmetric-memory all-reduce (the one path
# in vLLM that would ask for multimem) is not used either.
NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "VLLM_ALLREDUCE_USE_SYMM_MEM": "0",
}

RUNS: dict[str, list[dict[str, str]]] = {
    "single": [{"CUDA_VISIBLE_DEVICES": "0", "TENSOR_PARALLEL_SIZE": "1"}],
    "tp2": [{"CUDA_VISIBLE_DEVICES": "0,1", "TENSOR_PARALLEL_SIZE": "2"}],
    "pair": [
        {"CUDA_VISIBLE_DEVICES": "0", "TENSOR_PARALLEL_SIZE": "1"},
        {"CUDA_VISIBLE_DEVICES": "1", "TENSOR_PARALLEL_SIZE": "1"},
    ],
}
RATIOS = {"tp2_over_single": ("tp2", "single"), "pair_over_single": ("pair", "single")}


def worker_overlays(name: str, args: argparse.Namespace) -> list[dict[str, str]]:
    """The environment overlay of each worker of run ``name``."""
    extra = {**NO_MULTICAST}
    if args.engine == "tesseract":  # one OCR process per worker: a "device" each
        extra["TESSERACT_WORKERS"] = str(args.tesseract_workers)
    return [{**overlay, **extra} for overlay in RUNS[name]]


# ------------------------------------------------------------------ result audit


async def result_ends(bootstrap: str) -> dict[int, int]:
    """End offset of every partition of the result topic (where a run starts)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if RESULT_TOPIC not in await consumer.topics():
            raise RuntimeError(f"topic {RESULT_TOPIC} does not exist")
        partitions = sorted(consumer.partitions_for_topic(RESULT_TOPIC) or ())
        tps = [TopicPartition(RESULT_TOPIC, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def audit_results(
    bootstrap: str, since: Mapping[int, int], document_ids: Collection[str]
) -> dict[str, Any]:
    """Every result of ``document_ids`` published after ``since``: one OK each?"""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas import AvroSerde, CodecError, OcrResult, SerdeContext

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    statuses: dict[str, list[str]] = {doc: [] for doc in document_ids}
    serde, ctx = AvroSerde(), SerdeContext(RESULT_TOPIC)
    try:
        tps = [TopicPartition(RESULT_TOPIC, p) for p in sorted(since)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, since[tp.partition])
        pending = {tp for tp in tps if since[tp.partition] < ends[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for msgs in batch.values():
                for msg in msgs:
                    try:
                        result = serde.deserialize(OcrResult, msg.value or b"", ctx)
                    except CodecError:
                        continue
                    if result.document_id in statuses:
                        statuses[result.document_id].append(result.status.value)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return summarize_audit(statuses)


def summarize_audit(statuses: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Counts over each document's result statuses, in the order they were read."""
    missing = sorted(doc for doc, seen in statuses.items() if not seen)
    not_ok = sorted(doc for doc, seen in statuses.items() if seen and "OK" not in seen)
    duplicates = sum(max(0, len(seen) - 1) for seen in statuses.values())
    return {
        "documents": len(statuses),
        "results_read": sum(len(seen) for seen in statuses.values()),
        "exactly_one_ok": sum(1 for seen in statuses.values() if list(seen) == ["OK"]),
        "duplicates": duplicates,
        "documents_with_duplicates": sum(1 for s in statuses.values() if len(s) > 1),
        "missing": len(missing),
        "without_ok": len(not_ok),
        "statuses": dict(Counter(s for seen in statuses.values() for s in seen)),
        "missing_ids": missing[:20],
        "without_ok_ids": not_ok[:20],
    }


# ------------------------------------------------------------------ one run


def sidecar_json(port: int, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=2
        ) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


async def settled_group(pipeline: Pipeline, timeout_s: float) -> list[int]:
    """Wait until every worker holds partitions and together they hold all of them.

    A worker that joins later triggers a rebalance; timing starts only once the group
    is stable (the same assignment twice, a second apart), so that no rebalance moves
    work during the run.
    """
    deadline = time.monotonic() + timeout_s
    previous: list[int] = []
    while time.monotonic() < deadline:
        for proc in pipeline.workers:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        healths = [sidecar_json(p, "/health") for p in pipeline.sidecar_ports]
        counts = [int(h["assigned_partitions"]) if h else 0 for h in healths]
        complete = min(counts) > 0 and sum(counts) == pipeline.args.partitions
        if complete and counts == previous:
            return counts
        previous = counts if complete else []
        await asyncio.sleep(1.0)
    raise TimeoutError(f"consumer group not settled after {timeout_s}s: {previous}")


async def run_one(name: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Start broker and workers of run ``name``, warm up, time the pages, audit."""
    overlays = worker_overlays(name, args)
    run_dir = out_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(args, run_dir, overlays)
    warm_dir, timed_dir = page_dirs(args)
    prefix = f"{name}-t{args.max_tokens}-"
    try:
        ready_s = await pipeline.start()
        assignment = await settled_group(pipeline, args.phase_timeout)
        log(f"{name}: {len(overlays)} worker(s) ready in {ready_s:.1f}s {assignment}")
        started = time.perf_counter()
        await pipeline.run(warm_dir, f"{name}-warm-", 16)
        log(f"{name}: warm-up {args.warmup} pages {time.perf_counter() - started:.1f}s")
        since = await result_ends(pipeline.bootstrap)
        timed = await pipeline.run(timed_dir, prefix, args.max_tokens)
        # Stop the workers (drain, commit) before the audit, so a late duplicate
        # would be on the topic when it is read.
        pipeline.stop_workers()
        exit_codes = [proc.returncode for proc in pipeline.workers]
        ids = [prefix + path.stem for path in page_files(timed_dir)]
        audit = await audit_results(pipeline.bootstrap, since, ids)
    finally:
        pipeline.stop()
    timed["audit"] = audit
    summary = {k: v for k, v in timed.items() if k not in ("done_s", "audit")}
    log(f"{name}: RESULT", json.dumps(summary))
    log(
        f"{name}: audit", json.dumps({k: v for k, v in audit.items() if "ids" not in k})
    )
    return {
        "workers": len(overlays),
        "worker_env": overlays,
        "worker_ready_s": round(ready_s, 1),
        "assigned_partitions": assignment,
        "worker_exit_codes": exit_codes,
        **timed,
    }


# ------------------------------------------------------------------ report


def ratios(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    out = {}
    for key, (top, base) in RATIOS.items():
        if top in runs and base in runs and runs[base]["pages_per_s"] > 0:
            out[key] = round(runs[top]["pages_per_s"] / runs[base]["pages_per_s"], 3)
    return out


def plot(results: Mapping[str, Any], png: Path, bin_s: float = 1.0) -> None:
    """Pages/s over time of each run (completions per second, 3-bin average)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in results["runs"].items():
        xs, rates = rate_curve(run["done_s"], bin_s)
        ax.plot(xs, rates, label=f"{name}: {run['pages_per_s']:.2f} pages/s")
    config = results["config"]
    ax.set_title(
        f"{config['engine']}, {config['pages']} pages, max_tokens {config['max_tokens']}"
    )
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("pages/s (completions, 3 s average)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(f"one GPU vs TP=2 vs two workers ({config['devices']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def devices() -> str:
    """GPU names as nvidia-smi lists them (without importing torch in this process)."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "no GPU (nvidia-smi unavailable)"
    names = Counter(line.strip() for line in listing.splitlines() if line.strip())
    return ", ".join(f"{n}x {name}" for name, n in names.items()) or "no GPU"


def shrink_pages(root: Path, scale: float) -> None:
    """Scale generated full-size pages in place (CPU checks: cheaper OCR per page)."""
    from PIL import Image

    from tests.gpu.doc_pages import WIDTH

    for path in sorted(root.glob("*/page_*.png")):
        with Image.open(path) as image:
            if image.width != WIDTH:
                continue  # already scaled
            size = (round(image.width * scale), round(image.height * scale))
            small = image.resize(size, Image.Resampling.LANCZOS)
        small.save(path)


def page_size(folder: Path) -> list[int]:
    from PIL import Image

    with Image.open(page_files(folder)[0]) as image:
        return [image.width, image.height]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Path(args.json) if args.json else out_dir / "two-gpus.json"
    results: dict[str, Any] = (
        json.loads(target.read_text()) if target.exists() else {"runs": {}}
    )
    results["config"] = {
        **{k: v for k, v in vars(args).items() if k != "runs"},
        "devices": devices(),
        "engine_env": engine_env(args),
        "no_multicast_env": NO_MULTICAST,
    }
    page_sets(args)
    if args.page_scale != 1.0:
        shrink_pages(Path(args.pages_dir), args.page_scale)
    results["config"]["page_px"] = page_size(page_dirs(args)[1])
    for name in args.runs:
        log(f"run {name}")
        results["runs"][name] = asyncio.run(run_one(name, args, out_dir))
        results["ratios"] = ratios(results["runs"])
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        target.write_text(json.dumps(results, indent=1))
    for key, value in results.get("ratios", {}).items():
        log(f"{key}: {value}")
    try:
        plot(results, target.with_suffix(".png"))
    except ImportError:
        log("matplotlib missing: no plot")
    log(f"results in {target}")
    bad = [
        name
        for name, run in results["runs"].items()
        if run["audit"]["missing"] or run["audit"]["without_ok"]
    ]
    if bad:
        log(f"documents without an OK result in: {', '.join(bad)}")
    return 1 if bad else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else ""
    )
    add_pipeline_args(parser)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--runs", nargs="+", choices=sorted(RUNS), default=["single", "tp2", "pair"]
    )
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument(
        "--json", default="", help="results file (default OUT_DIR/two-gpus.json)"
    )
    parser.add_argument(
        "--tesseract-workers",
        type=int,
        default=1,
        help="with --engine tesseract: OCR processes per worker",
    )
    parser.add_argument(
        "--page-scale",
        type=float,
        default=1.0,
        help="scale the generated pages (< 1 for CPU checks; own pages folder)",
    )
    parser.set_defaults(partitions=8)
    args = parser.parse_args(argv)
    # TENSOR_PARALLEL_SIZE comes from each run's worker overlay; engine_env's own
    # value is overridden there.
    args.tensor_parallel_size = 1
    if args.partitions < 8:
        parser.error("--partitions must be at least 8 (issue 5)")
    if args.engine == "vllm" and args.pages < 256:
        log(f"note: {args.pages} pages; the measurement asks for at least 256")
    if not 0.1 <= args.page_scale <= 1.0:
        parser.error("--page-scale must be in 0.1..1")
    suffix = f"-scale{args.page_scale:g}" if args.page_scale != 1.0 else ""
    args.pages_dir = str(Path(args.pages_dir + suffix).resolve())
    return args


if __name__ == "__main__":
    sys.exit(main())
