"""Settings with topics and a consumer group of their own, for one test or bench case."""

from __future__ import annotations

import uuid

from consumers.local.broker import ensure_topics
from consumers.settings import Settings
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS


async def case_settings(
    bootstrap_servers: str,
    *,
    partitions: int,
    enable_idempotence: bool = False,
    fetch_max_wait_ms: int | None = EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    **kafka: object,
) -> Settings:
    """``Settings()`` on ``bootstrap_servers`` with the topics ``req-``, ``res-``,
    ``dlq-`` and ``prog-`` (created, ``partitions`` each) and the group ``grp-`` of a
    fresh suffix.

    Idempotence is off and fetches wait as briefly as the embedded broker wants
    unless told otherwise (``fetch_max_wait_ms=None``: the setting's own);
    ``kafka`` sets further Kafka settings.
    """
    suffix = uuid.uuid4().hex[:8]
    base = Settings()
    update: dict[str, object] = {
        "bootstrap_servers": bootstrap_servers,
        "enable_idempotence": enable_idempotence,
        "input_topic": f"req-{suffix}",
        "result_topic": f"res-{suffix}",
        "dlq_topic": f"dlq-{suffix}",
        "progress_topic": f"prog-{suffix}",
        "consumer_group": f"grp-{suffix}",
        "partitions": partitions,
        **kafka,
    }
    if fetch_max_wait_ms is not None:
        update["fetch_max_wait_ms"] = fetch_max_wait_ms
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update=update)})
    await create_topics(settings)
    return settings


async def create_topics(settings: Settings) -> None:
    """Every topic of ``settings`` on its broker, with its number of partitions."""
    kafka = settings.kafka
    await ensure_topics(kafka.client_kwargs(), kafka.all_topics(), kafka.partitions)
