"""The wire contract: Avro schemas (``*.avsc``), their codec and typed records.

Nothing here knows about Kafka clients; producers and consumers use these to turn
records into bytes and back.
"""

from schemas.codec import AvroCodec, CodecError, load_codec
from schemas.records import (
    DocumentStatus,
    OcrDeadLetter,
    OcrPage,
    OcrProgress,
    OcrRequest,
    OcrResult,
    PageStatus,
    RecordHeader,
)

__all__ = [
    "AvroCodec",
    "CodecError",
    "DocumentStatus",
    "OcrDeadLetter",
    "OcrPage",
    "OcrProgress",
    "OcrRequest",
    "OcrResult",
    "PageStatus",
    "RecordHeader",
    "load_codec",
]
