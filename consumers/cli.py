"""The ``medocr`` console script: broker, worker, publish, gateway, demo.

Settings are read from the environment here, once, and handed down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from consumers.errors import ConfigurationError, FatalError
from consumers.logs import limit_broker_outage_logs
from consumers.settings import KafkaSettings, Settings
from producers.kafka import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    BrokerCertificateError,
    verify_broker_tls,
)

log = logging.getLogger("medocr")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"medocr: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    limit_broker_outage_logs(logging.getLogger().handlers)
    try:
        status: int = asyncio.run(args.run(args, settings))
    except ConfigurationError as exc:
        print(f"medocr: {exc}", file=sys.stderr)
        return 2
    except BrokerCertificateError as exc:
        print(f"medocr: {_certificate_sentence(exc, settings.kafka)}", file=sys.stderr)
        return 2
    except FatalError as exc:
        log.error("stopped on a fatal error: %s", exc)  # noqa: TRY400 - cause logged where raised
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medocr", description="Event-driven OCR for medical documents."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument(
        "--partitions", type=int, default=None, help="default: OCR_TOPIC_PARTITIONS"
    )
    broker.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where tansu's output goes (rotated at 10 MiB, one old file kept);"
        " default: medocr-broker-PORT.log in the temporary folder",
    )
    broker.set_defaults(run=_broker)

    worker = sub.add_parser(
        "worker", help="consume requests, OCR them, publish results"
    )
    worker.add_argument(
        "--burst", action="store_true", help="exit once the input topic is drained"
    )
    worker.set_defaults(run=_worker)

    publish = sub.add_parser("publish", help="publish scans (files or folders)")
    publish.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    publish.add_argument(
        "--wait", action="store_true", help="wait for each result and print it"
    )
    publish.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    publish.add_argument(
        "--progress",
        action="store_true",
        help=(
            "with --wait: ask to stream and print each document's text as it is"
            " recognised, a line at a time, every line prefixed with its document"
            " and page ('… ID pN | text'; pages and documents interleave), each"
            " page's end and status, and '[retry: page N restarts: REASON]'"
        ),
    )
    publish.add_argument(
        "--by-reference",
        action="store_true",
        help="send file:// URIs instead of the bytes (workers need OCR_FILE_URI_ROOTS)",
    )
    publish.add_argument("--prompt", default=None)
    publish.add_argument("--max-tokens", type=int, default=4096)
    publish.add_argument("--temperature", type=float, default=0.0)
    publish.add_argument("--id-prefix", default="", help="prefix for document ids")
    publish.set_defaults(run=_publish)

    gateway = sub.add_parser(
        "gateway",
        help="the HTTP API (/v1/ocr, /v1/chat/completions) answered through Kafka",
    )
    gateway.set_defaults(run=_gateway)

    demo = sub.add_parser("demo", help="broker + worker + the bundled sample scans")
    demo.set_defaults(run=_demo)
    return parser


async def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.local.broker import EmbeddedBroker, default_log_path, ensure_topics

    embedded = EmbeddedBroker(
        args.host, args.port, log_path=args.log_file or default_log_path(args.port)
    )
    embedded.start()
    try:
        kafka = settings.kafka
        await ensure_topics(
            {"bootstrap_servers": embedded.bootstrap_servers},
            kafka.all_topics(),
            args.partitions or kafka.partitions,
        )
        print(
            f"broker ready on {embedded.bootstrap_servers}\n"
            "it keeps everything in memory: a restart loses every topic, record"
            " and committed offset\n"
            f"broker log: {embedded.log_path}\n"
            "clients: export KAFKA_ENABLE_IDEMPOTENCE=false"
            f" KAFKA_FETCH_MAX_WAIT_MS={EMBEDDED_BROKER_FETCH_MAX_WAIT_MS}",
            flush=True,
        )
        await _until_signalled()
    finally:
        embedded.stop()
    return 0


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.runner import run_worker

    await verify_broker_tls(settings.kafka.client_kwargs())
    stop = asyncio.Event()
    _on_signals(stop.set)
    await run_worker(settings, stop, burst=args.burst)
    return 0


async def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from producers.cli import PublishOptions, publish_command
    from producers.publisher import RequestOptions

    kafka = settings.kafka
    await verify_broker_tls(kafka.client_kwargs())
    options = PublishOptions(
        request=RequestOptions(
            prompt=args.prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            by_reference=args.by_reference,
            id_prefix=args.id_prefix,
        ),
        wait=args.wait,
        timeout_s=args.timeout,
        show_progress=args.wait and args.progress,
    )
    async with settings.client(progress=options.show_progress) as client:
        return await publish_command(args.paths, client, options)


async def _gateway(args: argparse.Namespace, settings: Settings) -> int:
    from producers.gateway.server import GatewayStartError, run_gateway

    kafka, listen = settings.kafka, settings.gateway
    try:
        config = listen.config(settings.limits, kafka.result_topic)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    await verify_broker_tls(kafka.client_kwargs())
    stop = asyncio.Event()
    _on_signals(stop.set)
    try:
        async with settings.client(progress=True, reply_group=listen.group) as client:
            await run_gateway(
                client,
                config,
                client_kwargs=kafka.client_kwargs(),
                host=listen.host,
                port=listen.port,
                stop=stop,
            )
    except GatewayStartError as exc:
        raise ConfigurationError(str(exc)) from exc
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.local.demo import run_demo

    return await run_demo(settings)


def _certificate_sentence(exc: BrokerCertificateError, kafka: KafkaSettings) -> str:
    cafile = kafka.ssl_cafile or "not set: the system CAs"
    return (
        f"TLS certificate verification failed for the broker at {exc.address}"
        f" ({exc.reason}): check that KAFKA_SSL_CAFILE ({cafile}) holds the CA"
        " that signed its certificate"
    )


async def _until_signalled() -> None:
    stop = asyncio.Event()
    _on_signals(stop.set)
    await stop.wait()


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, callback)
