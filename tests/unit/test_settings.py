"""Configuration from the environment: names, the seed's defaults, security options."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from consumers.inputs import ImageLimits
from consumers.intake import RequestLimits
from consumers.runner import build_consumer
from consumers.settings import (
    DEFAULT_PROMPT,
    BatchSettings,
    KafkaSettings,
    LimitSettings,
    Settings,
    VllmSettings,
    env_names,
)
from consumers.state import DEFAULT_STALL_TIMEOUT_S
from consumers.worker import LoopOptions
from producers.kafka import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    ProducerOptions,
    Topics,
    fetch_options,
)

PASSWORD = "s3cret-pw"  # noqa: S105 - a test value, not a credential


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without any medocr setting."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


DEFAULTS = [
    ("engine", "tesseract"),
    ("prompt", "이 의료 문서의 모든 텍스트를 정확하게 추출하라."),
    ("kafka.bootstrap_servers", "localhost:9092"),
    ("kafka.security_protocol", "PLAINTEXT"),
    ("kafka.enable_idempotence", True),
    ("kafka.input_topic", "ocr.requests"),
    ("kafka.result_topic", "ocr.results"),
    ("kafka.dlq_topic", "ocr.requests.dlq"),
    ("kafka.consumer_group", "medocr-workers"),
    ("kafka.fetch_max_wait_ms", 500),
    ("limits.max_document_bytes", 20 * 1024 * 1024),
    ("limits.max_side_px", 4096),
    ("vllm.model_name", "Qwen/Qwen2.5-VL-7B-Instruct"),
    ("vllm.tensor_parallel_size", 1),
    ("vllm.gpu_memory_util", 0.90),
    ("vllm.max_model_len", 8192),
    ("vllm.max_num_seqs", 32),
    ("vllm.default_max_tokens", 4096),
    ("vllm.capacity_max_tokens", 0),
    ("vllm.quantization", None),
    ("vllm.kv_cache_dtype", "auto"),
    ("sidecar.host", "0.0.0.0"),
    ("sidecar.port", 8000),
    ("sidecar.api_key", None),
]


def lookup(settings: Settings, path: str) -> object:
    value: object = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("path", "expected"), DEFAULTS, ids=[p for p, _ in DEFAULTS])
def test_defaults_equal_the_seeds(path: str, expected: object) -> None:
    assert lookup(Settings(), path) == expected


def test_default_prompt_is_the_seeds_korean_prompt() -> None:
    assert DEFAULT_PROMPT == "이 의료 문서의 모든 텍스트를 정확하게 추출하라."


ENV = [
    ("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093", "kafka.bootstrap_servers", None),
    ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", "kafka.security_protocol", None),
    ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "kafka.sasl_mechanism", None),
    ("KAFKA_SASL_USERNAME", "ocr", "kafka.sasl_username", None),
    ("KAFKA_SSL_CAFILE", "/etc/ca.pem", "kafka.ssl_cafile", None),
    ("KAFKA_ENABLE_IDEMPOTENCE", "false", "kafka.enable_idempotence", False),
    ("KAFKA_FETCH_MAX_WAIT_MS", "100", "kafka.fetch_max_wait_ms", 100),
    ("OCR_INPUT_TOPIC", "in", "kafka.input_topic", None),
    ("OCR_RESULT_TOPIC", "out", "kafka.result_topic", None),
    ("OCR_DLQ_TOPIC", "dead", "kafka.dlq_topic", None),
    ("OCR_CONSUMER_GROUP", "grp", "kafka.consumer_group", None),
    ("OCR_ENGINE", "vllm", "engine", None),
    ("OCR_MAX_DOCUMENT_BYTES", "1000", "limits.max_document_bytes", 1000),
    ("OCR_MAX_PAGES", "3", "limits.max_pages", 3),
    ("OCR_MAX_PIXELS", "5000", "limits.max_pixels", 5000),
    ("OCR_BATCH_MAX_RECORDS", "4", "batch.max_records", 4),
    ("MODEL_NAME", "org/model", "vllm.model_name", None),
    ("TENSOR_PARALLEL_SIZE", "2", "vllm.tensor_parallel_size", 2),
    ("GPU_MEMORY_UTIL", "0.5", "vllm.gpu_memory_util", 0.5),
    ("MAX_MODEL_LEN", "4096", "vllm.max_model_len", 4096),
    ("MAX_NUM_SEQS", "8", "vllm.max_num_seqs", 8),
    ("ENGINE_DEFAULT_MAX_TOKENS", "256", "vllm.default_max_tokens", 256),
    ("ENGINE_CAPACITY_MAX_TOKENS", "1024", "vllm.capacity_max_tokens", 1024),
    ("ENGINE_QUANTIZATION", "fp8", "vllm.quantization", None),
    ("ENGINE_KV_CACHE_DTYPE", "fp8_e4m3", "vllm.kv_cache_dtype", None),
    ("HOST", "127.0.0.1", "sidecar.host", None),
    ("PORT", "9000", "sidecar.port", 9000),
    ("TESSERACT_LANG", "eng", "tesseract.languages", None),
]


@pytest.mark.parametrize(
    ("name", "raw", "path", "parsed"), ENV, ids=[e[0] for e in ENV]
)
def test_environment_names_are_read(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    raw: str,
    path: str,
    parsed: object,
) -> None:
    monkeypatch.setenv(name, raw)
    assert lookup(Settings(), path) == (raw if parsed is None else parsed)


def test_every_tested_name_is_a_declared_name() -> None:
    assert {name for name, *_ in ENV} <= env_names()
    assert {"API_KEY", "KAFKA_SASL_PASSWORD"} <= env_names()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("OCR_ENGINE", "easyocr"),
        ("PORT", "70000"),
        ("KAFKA_SECURITY_PROTOCOL", "KERBEROS"),
        ("GPU_MEMORY_UTIL", "1.5"),
        ("OCR_MAX_PAGES", "0"),
        ("TENSOR_PARALLEL_SIZE", "two"),
        ("ENGINE_QUANTIZATION", "FP8"),
        ("ENGINE_QUANTIZATION", "fp8 --trust-remote-code"),
        ("ENGINE_KV_CACHE_DTYPE", "float16"),
    ],
)
def test_invalid_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ENGINE", "vllm"),
        ("PROMPT", "something else"),
        ("WORKERS", "3"),
        ("PARTITIONS", "2"),
        ("BATCH", "yes"),
        ("KAFKA", "broker:9092"),
        ("SIDECAR", '{"port": 1}'),
    ],
)
def test_only_the_documented_names_are_read(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    """A container's unrelated ENGINE, WORKERS or BATCH must not reconfigure medocr."""
    assert name not in env_names()
    monkeypatch.setenv(name, raw)
    settings = Settings()
    assert settings.engine == "tesseract"
    assert settings.prompt == DEFAULT_PROMPT
    assert settings.tesseract.workers == 0
    assert settings.kafka.partitions == 6
    assert settings.sidecar.port == 8000


@pytest.mark.parametrize("raw", ["", "  "])
def test_a_blank_quantization_is_none(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("ENGINE_QUANTIZATION", raw)
    assert Settings().vllm.quantization is None
    assert VllmSettings(quantization=raw).quantization is None


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.engine = "vllm"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.kafka.input_topic = "x"  # type: ignore[misc]


def test_plaintext_client_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    assert Settings().kafka.client_kwargs() == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_client_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "ocr-worker")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    kwargs = Settings().kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "ocr-worker"
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in kwargs


def test_sasl_mechanism_defaults_to_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "p")
    kwargs = Settings().kafka.client_kwargs()
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_ssl_client_kwargs_carry_an_ssl_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    kwargs = Settings().kafka.client_kwargs()
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in kwargs


def test_secrets_do_not_leak_into_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-pw-123")
    monkeypatch.setenv("API_KEY", "metrics-key-456")
    settings = Settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "kafka-pw-123" not in text
        assert "metrics-key-456" not in text
    assert settings.sidecar.api_key is not None
    assert settings.sidecar.api_key.get_secret_value() == "metrics-key-456"


def test_env_names_lists_the_issue_contract() -> None:
    contract = {
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CAFILE",
        "OCR_INPUT_TOPIC",
        "OCR_RESULT_TOPIC",
        "OCR_DLQ_TOPIC",
        "OCR_CONSUMER_GROUP",
        "OCR_ENGINE",
        "HOST",
        "PORT",
        "API_KEY",
    }
    assert contract <= env_names()


def test_a_blank_api_key_is_no_key() -> None:
    from consumers.settings import SidecarSettings

    assert SidecarSettings(api_key="").api_key is None
    assert SidecarSettings(api_key="  ").api_key is None
    key = SidecarSettings(api_key="k").api_key
    assert key is not None and key.get_secret_value() == "k"


ENGINE_AND_LIMITS = {
    "ENGINE_DEFAULT_MAX_TOKENS": "256",
    "ENGINE_MAX_PIXELS": "200704",
    "OCR_MAX_PAGES": "3",
    "OCR_MAX_DOCUMENT_BYTES": "1000",
    "OCR_INPUT_TOPIC": "elsewhere",
}


def test_groups_built_in_tests_do_not_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only ``Settings`` reads the environment; a group is plain data."""
    for name, raw in ENGINE_AND_LIMITS.items():
        monkeypatch.setenv(name, raw)
    assert VllmSettings().default_max_tokens == 4096
    assert VllmSettings(min_pixels=4).max_pixels == 1280 * 28 * 28
    assert LimitSettings().max_pages == 50
    assert LimitSettings().max_document_bytes == 20 * 1024 * 1024
    assert KafkaSettings().input_topic == "ocr.requests"
    settings = Settings()
    assert settings.vllm.default_max_tokens == 256
    assert settings.vllm.max_pixels == 200704
    assert settings.limits.max_pages == 3
    assert settings.limits.max_document_bytes == 1000
    assert settings.kafka.input_topic == "elsewhere"


def test_a_group_is_read_by_its_documented_names_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("max_pages", "3")
    monkeypatch.setenv("limits", '{"max_pages": 3}')
    assert Settings().limits.max_pages == 50


def test_keyword_arguments_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCR_INPUT_TOPIC", "from-env")
    monkeypatch.setenv("OCR_ENGINE", "vllm")
    settings = Settings(engine="tesseract", kafka=KafkaSettings(input_topic="given"))
    assert settings.engine == "tesseract"
    assert settings.kafka.input_topic == "given"


def test_defaults_are_those_of_the_code_that_uses_them() -> None:
    """One default per value: the settings take theirs from the options they build."""
    settings = Settings()
    assert settings.limits.image_limits() == ImageLimits()
    assert settings.limits.request_limits() == RequestLimits()
    assert settings.producer_options() == ProducerOptions()
    assert settings.kafka.topics() == Topics()
    assert settings.batch.loop_options() == LoopOptions()
    assert settings.batch.stall_timeout_s == DEFAULT_STALL_TIMEOUT_S


def test_the_loop_options_follow_the_settings() -> None:
    batch = BatchSettings(max_records=3, max_wait_ms=7, drain_timeout_s=9.5)
    assert batch.loop_options() == LoopOptions(
        max_records=3, max_wait_ms=7, drain_timeout_s=9.5
    )


def test_limits_and_producer_options_follow_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCR_MAX_DOCUMENT_BYTES", "1000")
    monkeypatch.setenv("OCR_MAX_PIXELS", "5000")
    monkeypatch.setenv("OCR_MAX_PROMPT_BYTES", "7")
    monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "false")
    settings = Settings()
    assert settings.limits.image_limits().max_document_bytes == 1000
    assert settings.limits.image_limits().max_pixels == 5000
    assert settings.limits.request_limits().max_prompt_bytes == 7
    assert settings.producer_options() == ProducerOptions(
        enable_idempotence=False, max_document_bytes=1000
    )


@pytest.mark.parametrize(
    ("overrides", "tokens"),
    [
        ({}, 4096),
        ({"default_max_tokens": 256}, 256),
        ({"default_max_tokens": 256, "capacity_max_tokens": 1024}, 1024),
    ],
)
def test_capacity_tokens_follow_the_request_default_unless_set(
    overrides: dict[str, int], tokens: int
) -> None:
    assert VllmSettings.model_validate(overrides).capacity_tokens() == tokens


def test_consumers_fetch_any_one_record_and_wait_as_told() -> None:
    assert fetch_options(1000) == {
        "max_partition_fetch_bytes": 1000 + 1024 * 1024,
        "fetch_max_wait_ms": 500,  # Kafka's default, not the embedded broker's 100
    }
    assert fetch_options(1000, EMBEDDED_BROKER_FETCH_MAX_WAIT_MS) == {
        "max_partition_fetch_bytes": 1000 + 1024 * 1024,
        "fetch_max_wait_ms": 100,
    }


async def test_the_workers_consumer_is_built_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", "100")
    monkeypatch.setenv("OCR_CONSUMER_GROUP", "grp")
    consumer = build_consumer(Settings())
    try:
        # aiokafka keeps its options private; these are the ones medocr sets
        assert consumer._fetch_max_wait_ms == 100
        assert consumer._group_id == "grp"
        assert consumer._enable_auto_commit is False
        assert consumer._max_poll_interval_ms == 600_000
    finally:
        await consumer.stop()
