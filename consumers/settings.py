"""Configuration: one frozen object, read from the environment once at the entry point.

``Settings`` is the only ``BaseSettings``: it reads each field's documented environment
name (flat, un-prefixed: ``KAFKA_BOOTSTRAP_SERVERS``, ``OCR_MAX_PAGES``, ...) into its
groups, which are plain frozen models, so a group built in a test
(``VllmSettings(max_pixels=...)``) never sees the environment. Nothing below
``consumers.cli`` reads ``os.environ``; constructors take the values they need, and
each group says what it becomes (``image_limits()``, ``topics()``, ...).

A default lives with the code that uses it (the limits of an image in
``consumers.inputs``, of a request in ``consumers.intake``, the document cap and topic
names in ``producers.kafka``); a setting names the environment variable that overrides
it. Every environment name is listed in the README's configuration table, and the
deploy files may only set names that appear here (a test checks both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumers.documents import DECODE_TIMEOUT_S, URI_READ_TIMEOUT_S
from consumers.inputs import ImageLimits
from consumers.intake import RequestLimits
from consumers.retry import RetryPolicy
from consumers.state import DEFAULT_STALL_TIMEOUT_S
from consumers.worker import LoopOptions
from producers.gateway.config import (
    DEFAULT_GROUP,
    DEFAULT_MAX_WAITS,
    DEFAULT_TIMEOUT_S,
    HTTP_FETCH_TIMEOUT_S,
    GatewayConfig,
)
from producers.kafka import (
    FETCH_MAX_WAIT_MS,
    MAX_DOCUMENT_BYTES,
    ProducerOptions,
    Topics,
)
from producers.streams import StreamPolicy

if TYPE_CHECKING:
    from producers.client import OcrClient

DEFAULT_PROMPT = "이 의료 문서의 모든 텍스트를 정확하게 추출하라."

_TOPICS = Topics()
_IMAGES = ImageLimits()
_REQUESTS = RequestLimits()
_RETRY = RetryPolicy()
_LOOP = LoopOptions()
_STREAM = StreamPolicy()


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class _Group(BaseModel):
    """A group of settings: plain data; only ``Settings`` reads the environment."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class KafkaSettings(_Group):
    bootstrap_servers: str = Field(
        "localhost:9092", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS")
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        Field("PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL"))
    )
    sasl_mechanism: str | None = Field(
        None, validation_alias=_env("KAFKA_SASL_MECHANISM")
    )
    sasl_username: str | None = Field(
        None, validation_alias=_env("KAFKA_SASL_USERNAME")
    )
    sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("KAFKA_SASL_PASSWORD")
    )
    ssl_cafile: str | None = Field(None, validation_alias=_env("KAFKA_SSL_CAFILE"))
    # Apache Kafka supports idempotent producers; the embedded tansu broker does not.
    enable_idempotence: bool = Field(
        True, validation_alias=_env("KAFKA_ENABLE_IDEMPOTENCE")
    )
    # Longest a fetch waits at the broker while there is nothing new; the embedded
    # broker's callers lower it (producers.kafka.EMBEDDED_BROKER_FETCH_MAX_WAIT_MS).
    fetch_max_wait_ms: int = Field(
        FETCH_MAX_WAIT_MS, ge=0, validation_alias=_env("KAFKA_FETCH_MAX_WAIT_MS")
    )
    input_topic: str = Field(_TOPICS.requests, validation_alias=_env("OCR_INPUT_TOPIC"))
    result_topic: str = Field(
        _TOPICS.results, validation_alias=_env("OCR_RESULT_TOPIC")
    )
    dlq_topic: str = Field(_TOPICS.dead_letters, validation_alias=_env("OCR_DLQ_TOPIC"))
    progress_topic: str = Field(
        _TOPICS.progress, validation_alias=_env("OCR_PROGRESS_TOPIC")
    )
    consumer_group: str = Field(
        "medocr-workers", validation_alias=_env("OCR_CONSUMER_GROUP")
    )
    partitions: int = Field(6, ge=1, validation_alias=_env("OCR_TOPIC_PARTITIONS"))

    def topics(self) -> Topics:
        """The request, result and progress topics, as senders and waiters need them."""
        return Topics(self.input_topic, self.result_topic, self.progress_topic)

    def all_topics(self) -> list[str]:
        """Every topic the pipeline reads or writes (what a broker must have)."""
        return [
            self.input_topic,
            self.result_topic,
            self.dlq_topic,
            self.progress_topic,
        ]

    def client_kwargs(self) -> dict[str, object]:
        """Connection and security options shared by every aiokafka client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        return kwargs


class LimitSettings(_Group):
    max_document_bytes: int = Field(
        MAX_DOCUMENT_BYTES, ge=1, validation_alias=_env("OCR_MAX_DOCUMENT_BYTES")
    )
    max_pages: int = Field(
        _IMAGES.max_pages, ge=1, validation_alias=_env("OCR_MAX_PAGES")
    )
    max_pixels: int = Field(
        _IMAGES.max_pixels, ge=1, validation_alias=_env("OCR_MAX_PIXELS")
    )  # per page, checked from the header before decoding (decompression bombs)
    max_side_px: int = Field(
        _IMAGES.max_side_px, ge=64, validation_alias=_env("OCR_MAX_SIDE_PX")
    )
    # All pages of one document together, from the headers before decoding: 50 A4 pages
    # at 400 dpi fit; a 50-page TIFF of 100-megapixel pages does not.
    max_document_pixels: int = Field(
        _IMAGES.max_document_pixels,
        ge=1,
        validation_alias=_env("OCR_MAX_DOCUMENT_PIXELS"),
    )
    # A document whose pages take longer to decode fails (the decode is abandoned).
    decode_timeout_s: float = Field(
        DECODE_TIMEOUT_S, gt=0, validation_alias=_env("OCR_DECODE_TIMEOUT_S")
    )
    # file:// image URIs are read only below these folders (comma separated); empty = refused.
    file_uri_roots: str = Field("", validation_alias=_env("OCR_FILE_URI_ROOTS"))
    uri_read_timeout_s: float = Field(
        URI_READ_TIMEOUT_S, gt=0, validation_alias=_env("OCR_URI_READ_TIMEOUT_S")
    )
    # What a request may carry; more is INVALID_REQUEST before any work is done.
    max_id_chars: int = Field(
        _REQUESTS.max_id_chars, ge=1, validation_alias=_env("OCR_MAX_ID_CHARS")
    )
    max_attributes: int = Field(
        _REQUESTS.max_attributes, ge=0, validation_alias=_env("OCR_MAX_ATTRIBUTES")
    )
    max_attributes_bytes: int = Field(
        _REQUESTS.max_attributes_bytes,
        ge=0,
        validation_alias=_env("OCR_MAX_ATTRIBUTES_BYTES"),
    )
    max_prompt_bytes: int = Field(
        _REQUESTS.max_prompt_bytes,
        ge=1,
        validation_alias=_env("OCR_MAX_PROMPT_BYTES"),
    )

    # A PDF page with a usable text layer (born-digital): auto = take it instead of OCR,
    # never = always OCR, only = never OCR (a page without one fails: NO_TEXT_LAYER).
    pdf_text_layer: Literal["auto", "never", "only"] = Field(
        "auto", validation_alias=_env("OCR_PDF_TEXT_LAYER")
    )
    # DICOM attributes copied into the result (comma-separated keywords; PHI).
    dicom_attributes: str = Field(
        ",".join(_IMAGES.dicom_attributes),
        validation_alias=_env("OCR_DICOM_ATTRIBUTES"),
    )

    def image_limits(self, render_max_pixels: int = 0) -> ImageLimits:
        """What a scan may be: checked from its headers, then page by page. A PDF page
        is drawn with at most ``render_max_pixels`` (the engine's bound; 0: none)."""
        return ImageLimits(
            max_document_bytes=self.max_document_bytes,
            max_pages=self.max_pages,
            max_pixels=self.max_pixels,
            max_side_px=self.max_side_px,
            max_document_pixels=self.max_document_pixels,
            render_max_pixels=render_max_pixels,
            dicom_attributes=tuple(
                name.strip()
                for name in self.dicom_attributes.split(",")
                if name.strip()
            ),
        )

    def request_limits(self) -> RequestLimits:
        """What a request may carry besides its scan."""
        return RequestLimits(
            max_id_chars=self.max_id_chars,
            max_attributes=self.max_attributes,
            max_attributes_bytes=self.max_attributes_bytes,
            max_prompt_bytes=self.max_prompt_bytes,
        )

    def uri_roots(self) -> tuple[str, ...]:
        """The allowed folders, blanks stripped and symbolic links resolved."""
        return tuple(
            os.path.realpath(root.strip())
            for root in self.file_uri_roots.split(",")
            if root.strip()
        )


class BatchSettings(_Group):
    max_records: int = Field(
        _LOOP.max_records, ge=1, validation_alias=_env("OCR_BATCH_MAX_RECORDS")
    )
    max_wait_ms: int = Field(
        _LOOP.max_wait_ms, ge=0, validation_alias=_env("OCR_BATCH_MAX_WAIT_MS")
    )
    # 0 = let the engine say how many pages it can hold at once.
    max_inflight_pages: int = Field(
        0, ge=0, validation_alias=_env("OCR_MAX_INFLIGHT_PAGES")
    )
    retry_attempts: int = Field(
        _RETRY.attempts, ge=1, validation_alias=_env("OCR_RETRY_ATTEMPTS")
    )
    retry_backoff_max_s: float = Field(
        _RETRY.max_s, gt=0, validation_alias=_env("OCR_RETRY_BACKOFF_MAX_S")
    )
    drain_timeout_s: float = Field(
        _LOOP.drain_timeout_s, gt=0, validation_alias=_env("OCR_DRAIN_TIMEOUT_S")
    )
    publish_progress: bool = Field(False, validation_alias=_env("OCR_PUBLISH_PROGRESS"))
    # A streaming request's text goes out this often, or every so many engine deltas.
    stream_flush_s: float = Field(
        _STREAM.flush_s, gt=0, validation_alias=_env("OCR_STREAM_FLUSH_S")
    )
    stream_flush_deltas: int = Field(
        _STREAM.flush_deltas, ge=1, validation_alias=_env("OCR_STREAM_FLUSH_DELTAS")
    )
    # Records in flight and no page finished for this long: /health answers 503.
    stall_timeout_s: float = Field(
        DEFAULT_STALL_TIMEOUT_S, gt=0, validation_alias=_env("OCR_STALL_TIMEOUT_S")
    )

    def stream_policy(self) -> StreamPolicy:
        """When a streaming request's buffered text goes out as one event."""
        return StreamPolicy(self.stream_flush_s, self.stream_flush_deltas)

    def loop_options(self) -> LoopOptions:
        """How the worker's loop fetches and drains."""
        return LoopOptions(
            max_records=self.max_records,
            max_wait_ms=self.max_wait_ms,
            drain_timeout_s=self.drain_timeout_s,
        )


class TesseractSettings(_Group):
    languages: str = Field("kor+eng", validation_alias=_env("TESSERACT_LANG"))
    workers: int = Field(
        0, ge=0, validation_alias=_env("TESSERACT_WORKERS")
    )  # 0 = CPU count
    page_timeout_s: float = Field(
        120.0, gt=0, validation_alias=_env("TESSERACT_PAGE_TIMEOUT_S")
    )
    # 4 (a single column of lines) reads table rows left to right as the ground truth
    # does; on docs-public it beats tesseract's default 3 in CER and in speed.
    psm: int = Field(4, ge=0, le=13, validation_alias=_env("TESSERACT_PSM"))
    preprocess: bool = Field(True, validation_alias=_env("TESSERACT_PREPROCESS"))
    # Upscale of low-resolution (~100 dpi) scans: better text, slower pages (README).
    low_res_scale: float = Field(
        1.0, ge=1.0, le=3.0, validation_alias=_env("TESSERACT_LOW_RES_SCALE")
    )

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


class VllmSettings(_Group):
    model_name: str = Field(
        "Qwen/Qwen2.5-VL-7B-Instruct", validation_alias=_env("MODEL_NAME")
    )
    tensor_parallel_size: int = Field(
        1, ge=1, validation_alias=_env("TENSOR_PARALLEL_SIZE")
    )
    gpu_memory_util: float = Field(
        0.90, gt=0, le=1, validation_alias=_env("GPU_MEMORY_UTIL")
    )
    max_model_len: int = Field(8192, ge=256, validation_alias=_env("MAX_MODEL_LEN"))
    max_num_seqs: int = Field(32, ge=1, validation_alias=_env("MAX_NUM_SEQS"))
    max_num_batched_tokens: int = Field(
        16384, ge=256, validation_alias=_env("ENGINE_MAX_NUM_BATCHED_TOKENS")
    )
    load_format: str = Field("auto", validation_alias=_env("ENGINE_LOAD_FORMAT"))
    min_pixels: int = Field(3136, ge=1, validation_alias=_env("ENGINE_MIN_PIXELS"))
    max_pixels: int = Field(
        1280 * 28 * 28, ge=1, validation_alias=_env("ENGINE_MAX_PIXELS")
    )
    enable_prefix_caching: bool = Field(
        False, validation_alias=_env("ENGINE_PREFIX_CACHING")
    )
    mm_processor_cache_gb: float = Field(
        0.0, ge=0, validation_alias=_env("ENGINE_MM_CACHE_GB")
    )
    enforce_eager: bool = Field(False, validation_alias=_env("ENGINE_ENFORCE_EAGER"))
    quality_retries: int = Field(
        2, ge=0, validation_alias=_env("ENGINE_QUALITY_RETRIES")
    )
    # max_tokens of a request that carries 0.
    default_max_tokens: int = Field(
        4096, ge=1, validation_alias=_env("ENGINE_DEFAULT_MAX_TOKENS")
    )
    # Output tokens a page is assumed to take when the capacity figure is sized from
    # the KV cache; 0 = default_max_tokens.
    capacity_max_tokens: int = Field(
        0, ge=0, validation_alias=_env("ENGINE_CAPACITY_MAX_TOKENS")
    )
    dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto", validation_alias=_env("ENGINE_DTYPE")
    )
    # A vLLM quantization method (fp8: the weights quantized to FP8 at load, one scale
    # per tensor); None (unset or blank) = the model's own weights as they are.
    quantization: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_-]*$",
        validation_alias=_env("ENGINE_QUANTIZATION"),
    )
    # The KV cache's element type; auto = the model's dtype, fp8* = 8 bits a value.
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", validation_alias=_env("ENGINE_KV_CACHE_DTYPE")
    )
    # vLLM's renderer threads: its multimodal processor (RGB, resize to the pixel bounds,
    # normalise, patches) runs there, off the event loop.
    prep_threads: int = Field(
        4, ge=1, le=64, validation_alias=_env("ENGINE_PREP_THREADS")
    )
    # Benchmark-only: every page generates exactly max_tokens (EOS is ignored).
    ignore_eos: bool = Field(False, validation_alias=_env("ENGINE_IGNORE_EOS"))

    @field_validator("quantization", mode="before")
    @classmethod
    def _blank_is_unquantized(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def capacity_tokens(self) -> int:
        """The output budget of one page in the capacity figure (before the model
        length caps it)."""
        return self.capacity_max_tokens or self.default_max_tokens


class SidecarSettings(_Group):
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))  # noqa: S104 - container probe port
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("PORT"))
    api_key: SecretStr | None = Field(None, validation_alias=_env("API_KEY"))

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        # API_KEY= in an env file is "no key", never a key that matches an empty token
        return None if isinstance(value, str) and not value.strip() else value


class GatewaySettings(_Group):
    """``medocr gateway``, a process of its own: HOST, PORT and API_KEY are the
    sidecar's names, read again for it."""

    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))  # noqa: S104 - a server
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("PORT"))
    api_key: SecretStr | None = Field(None, validation_alias=_env("API_KEY"))
    max_waits: int = Field(
        DEFAULT_MAX_WAITS, ge=1, validation_alias=_env("GATEWAY_MAX_WAITS")
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S, gt=0, validation_alias=_env("GATEWAY_TIMEOUT_S")
    )
    # http(s) image URLs: off, the gateway would fetch whatever its senders name.
    http_fetch: bool = Field(False, validation_alias=_env("GATEWAY_HTTP_FETCH"))
    # 0 = OCR_MAX_DOCUMENT_BYTES
    http_fetch_max_bytes: int = Field(
        0, ge=0, validation_alias=_env("GATEWAY_HTTP_FETCH_MAX_BYTES")
    )
    http_fetch_timeout_s: float = Field(
        HTTP_FETCH_TIMEOUT_S,
        gt=0,
        validation_alias=_env("GATEWAY_HTTP_FETCH_TIMEOUT_S"),
    )
    # The replicas' consumer group on the result topic; blank = no group, this one
    # replica reads every partition.
    group: str | None = Field(DEFAULT_GROUP, validation_alias=_env("GATEWAY_GROUP"))

    @field_validator("api_key", "group", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def config(self, limits: LimitSettings, result_topic: str) -> GatewayConfig:
        """What the gateway is told (``ValueError`` without a usable API_KEY)."""
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        cap = limits.max_document_bytes
        return GatewayConfig(
            api_key=key,
            max_waits=self.max_waits,
            timeout_s=self.timeout_s,
            max_document_bytes=cap,
            max_id_chars=limits.max_id_chars,
            max_prompt_bytes=limits.max_prompt_bytes,
            file_uri_roots=limits.uri_roots(),
            http_fetch=self.http_fetch,
            http_fetch_max_bytes=min(self.http_fetch_max_bytes or cap, cap),
            http_fetch_timeout_s=self.http_fetch_timeout_s,
            result_topic=result_topic,
        )


class Settings(BaseSettings):
    """Everything the worker and the CLI read from the environment."""

    # case_sensitive: only the documented upper-case names are read, never a bare
    # field name such as ENGINE or WORKERS that happens to be in the environment.
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, case_sensitive=True
    )

    engine: Literal["tesseract", "vllm"] = Field(
        "tesseract", validation_alias=_env("OCR_ENGINE")
    )
    prompt: str = Field(DEFAULT_PROMPT, validation_alias=_env("OCR_DEFAULT_PROMPT"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    tesseract: TesseractSettings = Field(default_factory=TesseractSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the documented names; no .env, no secrets
        folder, no JSON in a variable named after a group."""
        return (init_settings, _DocumentedNames(settings_cls))

    def client(
        self, *, progress: bool = False, reply_group: str | None = None
    ) -> OcrClient:
        """An ``OcrClient`` for these brokers, topics and limits (``medocr publish``,
        the demo, the benches; ``medocr gateway`` with its ``reply_group``)."""
        from producers.client import OcrClient

        kafka = self.kafka
        return OcrClient(
            kafka.client_kwargs(),
            kafka.topics(),
            self.producer_options(),
            progress=progress,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            reply_group=reply_group,
        )

    def image_limits(self) -> ImageLimits:
        """The limits of a scan, with PDF pages drawn no larger than the engine reads."""
        render_max_pixels = self.vllm.max_pixels if self.engine == "vllm" else 0
        return self.limits.image_limits(render_max_pixels)

    def producer_options(self) -> ProducerOptions:
        """The options of every producer: the worker's, ``medocr publish``'s."""
        return ProducerOptions(
            enable_idempotence=self.kafka.enable_idempotence,
            max_document_bytes=self.limits.max_document_bytes,
        )


class _DocumentedNames(PydanticBaseSettingsSource):
    """The root's fields and each group's fields under their documented names."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        # Unused: __call__ reads whole groups by their fields' names.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = self._present(self.settings_cls.model_fields)
        for name, group in _groups():
            found = self._present(group.model_fields)
            if found:
                values[name] = found
        return values

    def _present(self, fields: Mapping[str, FieldInfo]) -> dict[str, str]:
        return {
            name: self._environ[name]
            for field in fields.values()
            for name in _names(field)
            if name in self._environ
        }


def _groups() -> Iterator[tuple[str, type[_Group]]]:
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, _Group):
            yield name, group


def _names(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    return [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []


def env_names() -> set[str]:
    """Every environment variable the settings read (for docs and deploy checks)."""
    fields = [*Settings.model_fields.values()]
    for _, group in _groups():
        fields.extend(group.model_fields.values())
    return {name for field in fields for name in _names(field)}
