"""Records to the bytes of a Kafka record value (or key) and back, for a topic.

``AvroSerde`` is the one place a record becomes bytes: the record's ``to_avro`` mapping,
its schema's Avro body (``schemas.avro``), and a framing (``schemas.framing``) that
may depend on where the bytes go, so every call names that in a ``SerdeContext``::

    serde = AvroSerde()
    raw = serde.serialize(result, SerdeContext(topic="ocr.results"))
    same = serde.deserialize(OcrResult, raw, SerdeContext(topic="ocr.results"))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar

from schemas.avro import AvroSchema, CodecError
from schemas.framing import Framing, SingleObjectFraming


@dataclass(frozen=True)
class SerdeContext:
    """Where the bytes go or come from: a topic, and whether they are its key or value."""

    topic: str
    field: Literal["key", "value"] = "value"


class AvroRecord(Protocol):
    """A record class of ``schemas.records``: its schema's full name and its mapping."""

    SCHEMA: ClassVar[str]

    def to_avro(self) -> dict[str, Any]: ...

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self: ...


R = TypeVar("R", bound=AvroRecord)


class AvroSerde:
    """Serialises records with one framing; parses each record type's schema once."""

    def __init__(self, framing: Framing | None = None) -> None:
        self._framing = framing or SingleObjectFraming()
        self._schemas: dict[str, AvroSchema] = {}
        self._parsing = threading.Lock()

    def schema_of(self, record_type: type[AvroRecord]) -> AvroSchema:
        """The schema of ``record_type``, parsed on first use by this serde."""
        name = record_type.SCHEMA
        schema = self._schemas.get(name)
        if schema is None:
            with self._parsing:
                schema = self._schemas.get(name)
                if schema is None:
                    schema = self._schemas[name] = AvroSchema.load(name)
        return schema

    def serialize(self, record: AvroRecord, ctx: SerdeContext) -> bytes:
        """The bytes of ``record`` for ``ctx``; ``CodecError`` if it does not fit."""
        schema = self.schema_of(type(record))
        return self._framing.frame(schema.write_body(record.to_avro()), schema, ctx)

    def deserialize(self, record_type: type[R], raw: bytes, ctx: SerdeContext) -> R:
        """The ``record_type`` in ``raw`` as read from ``ctx``; ``CodecError`` for bytes
        that are not one (other framing, unknown writer, corrupt body, wrong fields)."""
        schema = self.schema_of(record_type)
        writer, body = self._framing.unframe(raw, schema, ctx)
        fields = schema.read_body(body, writer)
        try:
            return record_type.from_avro(fields)
        except (TypeError, ValueError) as exc:
            raise CodecError(
                f"{schema.name} record does not fit {record_type.__name__}: {exc}"
            ) from exc
