"""The wire contract: Avro schemas (``*.avsc``), typed records and their serde.

Records are plain data; ``AvroSerde`` turns them into bytes for a topic and back
(``SerdeContext``): the Avro body (``schemas.avro``) inside a wire framing
(``schemas.framing``, single-object today). Nothing here knows about Kafka clients.
"""

from schemas.avro import AvroSchema, CodecError
from schemas.framing import Framing, SingleObjectFraming
from schemas.records import (
    DocumentStatus,
    OcrDeadLetter,
    OcrPage,
    OcrProgress,
    OcrRequest,
    OcrResult,
    PageStatus,
    RecordHeader,
    TextSource,
)
from schemas.serde import AvroRecord, AvroSerde, SerdeContext

__all__ = [
    "AvroRecord",
    "AvroSchema",
    "AvroSerde",
    "CodecError",
    "DocumentStatus",
    "Framing",
    "OcrDeadLetter",
    "OcrPage",
    "OcrProgress",
    "OcrRequest",
    "OcrResult",
    "PageStatus",
    "RecordHeader",
    "SerdeContext",
    "SingleObjectFraming",
    "TextSource",
]
