"""The peer of ``bench_online``: an OpenAI-compatible server driven over HTTP.

What a user would run instead of medocr (as in ``../shared/gpu/serve_peer.py``): vLLM's
own ``vllm serve``, started from the same ``engine_kwargs`` the medocr worker builds its
``AsyncLLM`` from (``serve_argv``), and an aiohttp client that sends each page at its
arrival time as a base64 data URL (``replay``), as vLLM's own ``vllm bench serve`` does.

For a CPU check there is a stand-in server with the same API that runs the ``tesseract``
binary on each image (``python -m tests.gpu.online_peer --stub --port N``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.gpu.online_load import Arrival, Outcome, at_arrivals

SERVED_MODEL = "medical-ocr"


def serve_argv(kwargs: Mapping[str, Any], port: int) -> list[str]:
    """``vllm serve`` (its api_server module) with the engine kwargs as flags: one flag
    per key, dicts as JSON, booleans as ``--x`` / ``--no-x``; None (unset) left out."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    argv += ["--served-model-name", SERVED_MODEL, "--disable-uvicorn-access-log"]
    return argv


def stub_argv(port: int, workers: int, languages: str) -> list[str]:
    return [
        sys.executable, "-m", "tests.gpu.online_peer", "--stub",
        "--port", str(port), "--workers", str(workers), "--languages", languages,
    ]  # fmt: skip


def wait_healthy(proc: subprocess.Popen[bytes], port: int, limit_s: float) -> float:
    """Seconds until ``/health`` answers 200 (the server exiting first is an error)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(f"peer server exited with {proc.returncode}")
        try:
            url = f"http://127.0.0.1:{port}/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"peer server not healthy after {limit_s}s")


def request_body(png: bytes, prompt: str, max_tokens: int) -> bytes:
    """One chat completion for one page, encoded once before the clock starts."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {
        "model": SERVED_MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    return json.dumps(body).encode()


async def replay(
    port: int,
    bodies: Sequence[bytes],
    arrivals: Sequence[Arrival],
    drain_timeout_s: float,
) -> list[Outcome]:
    """Send each arrival's page at its time; wait for all answers, at most
    ``drain_timeout_s`` after the last arrival (later ones count as unanswered)."""
    import aiohttp  # type: ignore[import-not-found,unused-ignore]

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    outcomes: dict[int, Outcome] = {}
    sent: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=0)  # one connection per request in flight
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time() + 0.5

        async def one(arrival: Arrival) -> None:
            sent[arrival.seq] = loop.time() - start
            ok, tokens = False, 0
            try:
                body = bodies[arrival.page]
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.json()
                    ok = response.status == 200
                    tokens = int(answer.get("usage", {}).get("completion_tokens", 0))
            except (aiohttp.ClientError, ValueError):
                ok = False
            done = loop.time() - start
            outcomes[arrival.seq] = Outcome(
                arrival, sent[arrival.seq], done, ok, tokens
            )

        await at_arrivals(arrivals, one, start, drain_timeout_s)
    return [
        outcomes.get(a.seq) or Outcome(a, sent.get(a.seq, a.at_s), None, False)
        for a in arrivals
    ]


# ------------------------------------------------------------------ CPU stand-in


class _StubHandler(BaseHTTPRequestHandler):
    """``/health`` and ``/v1/chat/completions`` with the tesseract binary behind."""

    turns: threading.Semaphore
    languages: str
    env: dict[str, str]  # one OpenMP thread per page, as medocr's TesseractEngine

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health" else 404, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][0]["content"]
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        png = base64.b64decode(url.split(",", 1)[1])
        with self.turns:
            text = subprocess.run(
                ["tesseract", "stdin", "stdout", "-l", self.languages, "--psm", "4"],
                input=png,
                capture_output=True,
                check=False,
                timeout=120,
                env=self.env,
            ).stdout.decode(errors="replace")
        usage = {"prompt_tokens": 0, "completion_tokens": len(text.split())}
        self._answer(200, {"choices": [{"message": {"content": text}}], "usage": usage})

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        raw = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the log."""


def serve_stub(port: int, workers: int, languages: str) -> None:
    _StubHandler.turns = threading.Semaphore(workers)
    _StubHandler.languages = languages
    _StubHandler.env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    ThreadingHTTPServer.daemon_threads = True
    with ThreadingHTTPServer(("127.0.0.1", port), _StubHandler) as server:
        server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU stand-in for vllm serve")
    parser.add_argument("--stub", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--languages", default="eng")
    args = parser.parse_args(argv)
    serve_stub(args.port, args.workers, args.languages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
