"""Character error rate, as OCR evaluations (and the docs-public data set) define it.

Both texts are NFC-normalised, every whitespace run becomes one space and the ends are
stripped; a page's CER is the Levenshtein distance on code points divided by the
reference length, and a group's CER is the micro-average (sum of distances / sum of
reference lengths). The demo uses it to score the bundled samples; the tests and the
benchmark to score engines.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


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
        return _rate(self.distance, self.reference_chars)


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
    return _rate(distance, reference)


def _rate(distance: int, reference_chars: int) -> float:
    if reference_chars == 0:  # nothing to read: any character read is all wrong
        return 1.0 if distance > 0 else 0.0
    return distance / reference_chars
