"""Character error rate as the docs-public data set defines it, and its manifest loader.

CER: both texts are NFC-normalised, every whitespace run becomes one space and the ends
are stripped; the page CER is the Levenshtein distance on code points divided by the
reference length, and a group's CER is the micro-average (sum of distances / sum of
reference lengths). The data set lives in ``../shared/data/docs-public`` next to the
repository; without it the repository's own samples (same manifest format) stand in.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "docs-public"
SAMPLES_DIR = REPO_ROOT / "producers" / "samples"


def normalize(text: str) -> str:
    """NFC, every whitespace run to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def levenshtein(hypothesis: str, reference: str) -> int:
    """Edit distance with unit costs on Unicode code points.

    One numpy row per hypothesis character: substitutions and deletions are
    elementwise, and the insertion chain along the row is a running minimum of
    ``row[k] - k`` (``D[j] = j + min_{k<=j}(A[k] - k)``), so long pages stay fast.
    """
    if not hypothesis:
        return len(reference)
    if not reference:
        return len(hypothesis)
    ref = np.fromiter(map(ord, reference), dtype=np.int64, count=len(reference))
    offsets = np.arange(len(reference) + 1, dtype=np.int64)
    row = offsets.copy()
    for index, char in enumerate(hypothesis, start=1):
        candidate = np.empty_like(row)
        candidate[0] = index
        # row[1:] + 1: delete this hypothesis char; row[:-1] + cost: match/substitute.
        np.minimum(row[1:] + 1, row[:-1] + (ref != ord(char)), out=candidate[1:])
        row = np.minimum.accumulate(candidate - offsets) + offsets
    return int(row[-1])


@dataclass(frozen=True)
class PageScore:
    distance: int
    reference_chars: int

    @property
    def cer(self) -> float:
        return _rate(self.distance, self.reference_chars, self.distance > 0)


def score_page(hypothesis: str, reference: str) -> PageScore:
    """Distance and reference length of one page, both texts normalised."""
    hyp, ref = normalize(hypothesis), normalize(reference)
    return PageScore(distance=levenshtein(hyp, ref), reference_chars=len(ref))


def page_cer(hypothesis: str, reference: str) -> float:
    return score_page(hypothesis, reference).cer


def micro_cer(scores: Iterable[PageScore]) -> float:
    """Sum of distances over sum of reference lengths."""
    distance = reference = 0
    for score in scores:
        distance += score.distance
        reference += score.reference_chars
    return _rate(distance, reference, distance > 0)


def _rate(distance: int, reference_chars: int, any_error: bool) -> float:
    if reference_chars == 0:
        return 1.0 if any_error else 0.0
    return distance / reference_chars


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
