"""An Avro schema parsed once, and the Avro binary body of a record: no framing here.

An ``AvroSchema`` writes records as bodies and reads bodies written with itself or with
any earlier version kept in ``schemas/history/`` (its ``writers``, keyed by
fingerprint), resolved to the current schema. Which writer a body was written with is
the framing's business (``schemas.framing``). Every value that cannot be written and
every body that cannot be read is a ``CodecError``, whatever fastavro raised.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from fastavro.validation import validate

# fastavro's messages may quote the value (a whole 11 MiB string): a reason is cut to this.
REASON_CHARS = 200


class CodecError(ValueError):
    """Bytes that are not a record this codec can read, or a record that does not fit."""


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's canonical form: 8 bytes, little-endian."""
    canonical = to_parsing_canonical_form(dict(schema))
    # fastavro prints the fingerprint's bytes in little-endian order already.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class AvroSchema:
    """One record schema, parsed once, and the writer schemas it can read."""

    def __init__(
        self, schema: Mapping[str, Any], history: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        parsed = parse_schema(dict(schema))
        if not isinstance(parsed, dict):
            raise TypeError("an AvroSchema is a record schema")
        self.parsed: dict[str, Any] = parsed
        self.name = str(parsed["name"])  # the full name, namespace included
        self.fingerprint = schema_fingerprint(schema)
        writers = {self.fingerprint: self}
        for old in history:
            writer = AvroSchema(old)
            writers.setdefault(writer.fingerprint, writer)
        self.writers: Mapping[bytes, AvroSchema] = MappingProxyType(writers)

    @classmethod
    def load(cls, name: str) -> AvroSchema:
        """The schema of a full name such as ``medocr.OcrResult``, with its history."""
        return cls(read_schema(name), history_schemas(name))

    def write_body(self, record: Mapping[str, Any]) -> bytes:
        """The Avro binary body of ``record``; ``CodecError`` if it does not fit.

        The record is validated first: fastavro's writer alone would write an ``int``
        field of 2**40 that other Avro libraries then refuse to read.
        """
        body = io.BytesIO()
        try:
            # raise_errors=True builds a message for every union branch it tries:
            # 0.8 s of CPU for a 16 MB value in a ["null", "bytes"] union. Only a record
            # that fails the quick check is checked again, for the message.
            if not validate(dict(record), self.parsed, raise_errors=False):
                validate(dict(record), self.parsed, raise_errors=True)
            fastavro.schemaless_writer(body, self.parsed, dict(record))
        except MemoryError:
            raise
        # A value fastavro cannot write raises whatever its code path happens to
        # (ValidationError, OverflowError, TypeError...): all mean "this value".
        except Exception as exc:
            raise CodecError(f"record does not fit {self.name}: {reason(exc)}") from exc
        return body.getvalue()

    def read_body(
        self, body: bytes, writer: AvroSchema | None = None
    ) -> dict[str, Any]:
        """The record in ``body``, written with ``writer`` (default: this schema) and
        resolved to this one; every byte of ``body`` must belong to it."""
        source = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(
                source, (writer or self).parsed, self.parsed
            )
        except MemoryError:
            raise  # the process's trouble, not the record's
        # Reading in-memory bytes through a parsed, non-recursive schema touches nothing
        # shared, so whatever fastavro raises is about these bytes: EOFError, ValueError,
        # IndexError, OverflowError (a timestamp of 2**62 ms)... A declared length larger
        # than the body cannot allocate it: BytesIO.read returns what there is.
        except Exception as exc:
            raise CodecError(f"corrupt {self.name} body: {reason(exc)}") from exc
        if not isinstance(record, dict):
            raise CodecError(f"{self.name} body is not a record")
        if source.tell() != len(body):
            raise CodecError(
                f"{self.name} body has trailing bytes: wrong schema or corrupt"
            )
        return record


def reason(exc: BaseException) -> str:
    """The exception's class and the start of its message, never a whole quoted value."""
    text = " ".join(str(exc)[: REASON_CHARS + 1].split())
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_schema(name: str) -> dict[str, Any]:
    """The ``.avsc`` file of a full name, as JSON."""
    text = resources.files("schemas").joinpath(f"{name}.avsc").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def history_schemas(name: str) -> tuple[dict[str, Any], ...]:
    """Each earlier version of a full name kept in ``schemas/history/``."""
    folder = resources.files("schemas").joinpath("history")
    found = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name.startswith(name + ".") and entry.name.endswith(".avsc")
    )
    return tuple(json.loads(folder.joinpath(n).read_text("utf-8")) for n in found)
