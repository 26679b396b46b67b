"""Wire framings: the bytes around an Avro body that name the schema it was written with.

``SingleObjectFraming`` is the Avro specification's single-object encoding, the one
this project writes: ``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint,
then the body. A Confluent Schema Registry framing (magic byte 0, then a 4-byte
big-endian schema id; the subject from the context's topic and field) would be a second
class beside it, taking a registry client in its constructor; ``AvroSerde`` takes
either, and neither the records nor their call sites change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from schemas.avro import AvroSchema, CodecError

if TYPE_CHECKING:
    from schemas.serde import SerdeContext

MAGIC = b"\xc3\x01"
FINGERPRINT_BYTES = 8
HEADER_BYTES = len(MAGIC) + FINGERPRINT_BYTES


class Framing(Protocol):
    """Frames an Avro body for a topic, and finds the writer schema of framed bytes."""

    def frame(self, body: bytes, schema: AvroSchema, ctx: SerdeContext) -> bytes:
        """``body``, written with ``schema``, as it goes on the wire to ``ctx``."""
        ...

    def unframe(
        self, raw: bytes, reader: AvroSchema, ctx: SerdeContext
    ) -> tuple[AvroSchema, bytes]:
        """The schema ``raw`` was written with and its body, for ``reader`` to read;
        ``CodecError`` when the framing is not this one or the writer is unknown."""
        ...


class SingleObjectFraming:
    """``C3 01`` + the writer's CRC-64-AVRO fingerprint (little-endian) + the body.

    Any Avro library can identify and decode such a record from the fingerprint alone;
    the topic plays no part in it.
    """

    def frame(self, body: bytes, schema: AvroSchema, ctx: SerdeContext) -> bytes:
        return b"".join((MAGIC, schema.fingerprint, body))

    def unframe(
        self, raw: bytes, reader: AvroSchema, ctx: SerdeContext
    ) -> tuple[AvroSchema, bytes]:
        if len(raw) < HEADER_BYTES or raw[: len(MAGIC)] != MAGIC:
            raise CodecError("not an Avro single-object record (missing C3 01 marker)")
        fingerprint = raw[len(MAGIC) : HEADER_BYTES]
        writer = reader.writers.get(fingerprint)
        if writer is None:
            raise CodecError(
                f"unknown schema fingerprint {fingerprint.hex()} for {reader.name}"
            )
        return writer, raw[HEADER_BYTES:]
