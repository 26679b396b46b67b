"""The wire contract: Avro schemas (``*.avsc``), their codec and typed records.

Nothing here knows about Kafka clients; producers and consumers use these to turn
records into bytes and back.
"""

from schemas.codec import AvroCodec, CodecError, load_codec
from schemas.records import (
    DeadLetter,
    DocumentStatus,
    OcrRequest,
    OcrResult,
    PageProgress,
    PageText,
    RecordHeader,
)

__all__ = [
    "AvroCodec",
    "CodecError",
    "DeadLetter",
    "DocumentStatus",
    "OcrRequest",
    "OcrResult",
    "PageProgress",
    "PageText",
    "RecordHeader",
    "load_codec",
]
