"""Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema's canonical form + the Avro binary body.

Any Avro library can identify and decode such a record from the fingerprint alone. Each
codec parses its schema once and also knows the earlier versions kept in
``schemas/history/``, so records written with an older schema still decode (resolved to
the current one).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from fastavro.validation import validate

MAGIC = b"\xc3\x01"
HEADER_BYTES = len(MAGIC) + 8

# fastavro's messages may quote the value (a whole 11 MiB string): a reason is cut to this.
REASON_CHARS = 200


class CodecError(ValueError):
    """Bytes that are not a record this codec can read, or a record that does not fit."""


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8 bytes that follow the marker: CRC-64-AVRO, little-endian."""
    canonical = to_parsing_canonical_form(dict(schema))
    # fastavro prints the fingerprint's bytes in little-endian order already.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class AvroCodec:
    def __init__(
        self, schema: Mapping[str, Any], history: tuple[Mapping[str, Any], ...] = ()
    ) -> None:
        self.name = str(schema["namespace"]) + "." + str(schema["name"])
        self._schema = parse_schema(dict(schema))
        self.fingerprint = schema_fingerprint(schema)
        self._writers = {self.fingerprint: self._schema}
        for old in history:
            self._writers.setdefault(schema_fingerprint(old), parse_schema(dict(old)))

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The single-object bytes of ``record``; ``CodecError`` if it does not fit.

        The record is validated first: fastavro's writer alone would write an ``int``
        field of 2**40 that other Avro libraries then refuse to read.
        """
        body = io.BytesIO()
        body.write(MAGIC)
        body.write(self.fingerprint)
        try:
            validate(dict(record), self._schema, raise_errors=True)
            fastavro.schemaless_writer(body, self._schema, dict(record))
        except MemoryError:
            raise
        # A value fastavro cannot write raises whatever its code path happens to
        # (ValidationError, OverflowError, TypeError...): all mean "this value".
        except Exception as exc:
            raise CodecError(f"record does not fit {self.name}: {reason(exc)}") from exc
        return body.getvalue()

    def decode(self, raw: bytes) -> dict[str, Any]:
        if len(raw) < HEADER_BYTES or raw[:2] != MAGIC:
            raise CodecError("not an Avro single-object record (missing C3 01 marker)")
        writer = self._writers.get(raw[2:HEADER_BYTES])
        if writer is None:
            raise CodecError(
                f"unknown schema fingerprint {raw[2:HEADER_BYTES].hex()} for {self.name}"
            )
        body = io.BytesIO(raw[HEADER_BYTES:])
        try:
            record = fastavro.schemaless_reader(body, writer, self._schema)
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
        if body.tell() != len(raw) - HEADER_BYTES:
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
    text = resources.files("schemas").joinpath(f"{name}.avsc").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def history_schemas(name: str) -> tuple[dict[str, Any], ...]:
    folder = resources.files("schemas").joinpath("history")
    found = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name.startswith(name + ".") and entry.name.endswith(".avsc")
    )
    return tuple(json.loads(folder.joinpath(n).read_text("utf-8")) for n in found)


@cache
def load_codec(name: str) -> AvroCodec:
    """The codec for a full name such as ``medocr.OcrResult`` (parsed once per process)."""
    return AvroCodec(read_schema(name), history_schemas(name))
