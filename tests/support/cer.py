"""The docs-public data set's manifest loader, and the CER it is scored with.

CER: both texts are NFC-normalised, every whitespace run becomes one space and the ends
are stripped; the page CER is the Levenshtein distance on code points divided by the
reference length, and a group's CER is the micro-average (sum of distances / sum of
reference lengths). Which data set a test scores is explicit (``data_set()``): the folder
``MEDOCR_DATA`` names (it must hold a manifest), else ``../shared/data/docs-public`` next to
the repository when present, else the repository's own samples (same manifest format);
tests print the name of the one they used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from consumers.local.cer import (
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
    "DataSet",
    "DocumentCase",
    "PageScore",
    "data_set",
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


@dataclass(frozen=True)
class DataSet:
    name: str
    folder: Path


def data_set() -> DataSet:
    """The data set the tests score: ``MEDOCR_DATA``, else docs-public, else samples."""
    chosen = os.environ.get("MEDOCR_DATA")
    if chosen:
        folder = Path(chosen)
        if not (folder / "manifest.jsonl").is_file():
            raise FileNotFoundError(f"MEDOCR_DATA={chosen} holds no manifest.jsonl")
        return DataSet(f"MEDOCR_DATA={chosen}", folder)
    if (PUBLIC_DATA_DIR / "manifest.jsonl").is_file():
        return DataSet("docs-public", PUBLIC_DATA_DIR)
    return DataSet("the bundled samples (no ../shared/data/docs-public)", SAMPLES_DIR)


def default_data_dir() -> Path:
    return data_set().folder
