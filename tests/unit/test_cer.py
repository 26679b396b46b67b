"""The CER that the benchmark and the engine tests report, against known distances."""

from __future__ import annotations

import random

import pytest

from tests.support.cer import (
    SAMPLES_DIR,
    PageScore,
    levenshtein,
    load_manifest,
    micro_cer,
    normalize,
    page_cer,
    score_page,
)


@pytest.mark.parametrize(
    ("hypothesis", "reference", "distance"),
    [
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("kitten", "sitting", 3),
        ("sitting", "kitten", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("abc", "acb", 2),  # a transposition is two edits, not one
        ("처방전", "처방전", 0),
        ("처방전", "처망전", 1),  # one Hangul syllable is one code point
        ("처 방 전", "처방전", 2),
        ("환자보관용", "약국보관용", 2),
        ("10,600 원", "10.600원", 2),
    ],
)
def test_levenshtein_known_distances(
    hypothesis: str, reference: str, distance: int
) -> None:
    assert levenshtein(hypothesis, reference) == distance


def _reference_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            substitute = previous[j - 1] + (char_a != char_b)
            current.append(min(previous[j] + 1, current[j - 1] + 1, substitute))
        previous = current
    return previous[-1]


def test_levenshtein_matches_the_textbook_recurrence_on_random_strings() -> None:
    rng = random.Random(7)
    alphabet = "ab 가나\n"
    for _ in range(500):
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 15)))
        b = "".join(rng.choices(alphabet, k=rng.randint(0, 15)))
        assert levenshtein(a, b) == _reference_levenshtein(a, b), (a, b)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("  a \t b\n\nc \f d  ", "a b c d"),
        ("line one\nline two\n", "line one line two"),
        ("\u1112\u1161\u11ab", "한"),  # decomposed jamo compose under NFC
        ("", ""),
        (" \n\t\f ", ""),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


def test_page_cer_counts_composed_and_decomposed_hangul_alike() -> None:
    assert page_cer("\u1112\u1161\u11ab\uae00", "한글") == 0.0


@pytest.mark.parametrize(
    ("hypothesis", "reference", "cer"),
    [
        ("abcd", "abcd", 0.0),
        ("abxd", "abcd", 0.25),
        ("a b\nc", "a  b c", 0.0),  # whitespace runs are one space on both sides
        ("", "abcd", 1.0),
        ("abcdefghij", "abcd", 1.5),  # insertions can push CER above 1
        ("", "", 0.0),
        ("x", "", 1.0),  # empty reference: 1 when anything was recognised
        ("x", " \n ", 1.0),
    ],
)
def test_page_cer(hypothesis: str, reference: str, cer: float) -> None:
    assert page_cer(hypothesis, reference) == pytest.approx(cer)


def test_micro_average_weights_pages_by_reference_length() -> None:
    scores = [score_page("abxd", "abcd"), score_page("a" * 96, "a" * 96)]
    assert scores == [PageScore(1, 4), PageScore(0, 96)]
    assert micro_cer(scores) == pytest.approx(0.01)  # not the macro mean 0.125
    assert micro_cer([]) == 0.0


def test_manifest_of_the_repository_samples() -> None:
    cases = load_manifest(SAMPLES_DIR)
    ids = {case.doc_id for case in cases}
    assert ids == {"pub-0007", "pub-0017", "pub-0026", "pub-0029"}
    for case in cases:
        assert case.path.is_file()
        assert len(case.ground_truth) == case.pages
        assert all(truth.strip() for truth in case.ground_truth)
