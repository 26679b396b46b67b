"""The docs-public data set's manifest loader, and the CER it is scored with.

CER: both texts are NFC-normalised, every whitespace run becomes one space and the ends
are stripped; the page CER is the Levenshtein distance on code points divided by the
reference length, and a group's CER is the micro-average (sum of distances / sum of
reference lengths). The data set lives in ``../shared/data/docs-public`` next to the
repository; without it the repository's own samples (same manifest format) stand in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from consumers.cer import (
    PageScore,
    levenshtein,
    micro_cer,
    normalize,
    page_cer,
    score_page,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "docs-public"
SAMPLES_DIR = REPO_ROOT / "producers" / "samples"

__all__ = [
    "PUBLIC_DATA_DIR",
    "SAMPLES_DIR",
    "DocumentCase",
    "PageScore",
    "levenshtein",
    "load_manifest",
    "micro_cer",
    "normalize",
    "page_cer",
    "score_page",
]


@dataclass(frozen=True)
class DocumentCase:
    """One manifest line: a document file and the ground truth of each page."""

    doc_id: str
    path: Path
    format: str
    degradation: str
    template: str
    pages: int
    ground_truth: tuple[str, ...]


def load_manifest(data_dir: Path | None = None) -> list[DocumentCase]:
    """The data set's documents; the repository samples when the data set is absent."""
    folder = data_dir or default_data_dir()
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest.jsonl in {folder}")
    cases = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        truth = tuple((folder / gt).read_text(encoding="utf-8") for gt in entry["gt"])
        if len(truth) != entry["pages"]:
            raise ValueError(f"{entry['id']}: {entry['pages']} pages, {len(truth)} gt")
        cases.append(
            DocumentCase(
                doc_id=entry["id"],
                path=folder / entry["file"],
                format=entry["format"],
                degradation=entry["degradation"],
                template=entry["template"],
                pages=entry["pages"],
                ground_truth=truth,
            )
        )
    return cases


def default_data_dir() -> Path:
    if (PUBLIC_DATA_DIR / "manifest.jsonl").is_file():
        return PUBLIC_DATA_DIR
    return SAMPLES_DIR
