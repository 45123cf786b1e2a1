"""Text reconstruction quality: token accuracy, exact sequence match, ROUGE-1/2/L, and matching a batch of
recovered sequences to its originals.

Sequences are lists (or 1-D tensors) of token ids; PAD (id 0 unless told) ends nothing and counts for nothing:
it is dropped before comparing. Token accuracy is positional: the share of the true tokens that the
recovered sequence has at the same position. ROUGE scores are F1 over token n-grams (Lin 2004); ROUGE-L uses
the longest common subsequence.

    >>> token_accuracy([5, 6, 7, 0], [5, 7, 7, 0])
    0.6666666666666666
    >>> exact_match([5, 6, 0], [5, 6])
    True
    >>> round(rouge_n([1, 2, 3, 4], [1, 2, 4, 3], 2), 4), round(rouge_l([1, 2, 3, 4], [1, 2, 4, 3]), 4)
    (0.3333, 0.75)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from torch import Tensor

Tokens = Sequence[int] | Tensor


def _clean(seq: Tokens, pad_id: int = 0) -> list[int]:
    return [int(t) for t in (seq.tolist() if isinstance(seq, Tensor) else seq) if int(t) != pad_id]


def token_accuracy(true: Tokens, recovered: Tokens, pad_id: int = 0) -> float:
    """Share of the true (non-PAD) tokens found at the same position in ``recovered``."""
    t, r = _clean(true, pad_id), _clean(recovered, pad_id)
    if not t:
        return 1.0 if not r else 0.0
    return sum(a == b for a, b in zip(t, r, strict=False)) / len(t)


def exact_match(true: Tokens, recovered: Tokens, pad_id: int = 0) -> bool:
    """Whether the two sequences are the same once PAD is dropped."""
    return _clean(true, pad_id) == _clean(recovered, pad_id)


def _f1(overlap: int, n_true: int, n_rec: int) -> float:
    if overlap == 0 or n_true == 0 or n_rec == 0:
        return 0.0
    p, r = overlap / n_rec, overlap / n_true
    return 2 * p * r / (p + r)


def rouge_n(true: Tokens, recovered: Tokens, n: int = 1, pad_id: int = 0) -> float:
    """ROUGE-N F1: clipped overlap of the n-gram multisets."""
    t, r = _clean(true, pad_id), _clean(recovered, pad_id)
    grams_t = Counter(tuple(t[i : i + n]) for i in range(len(t) - n + 1))
    grams_r = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
    overlap = sum((grams_t & grams_r).values())
    return _f1(overlap, sum(grams_t.values()), sum(grams_r.values()))


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(true: Tokens, recovered: Tokens, pad_id: int = 0) -> float:
    """ROUGE-L F1: longest common subsequence over the two lengths."""
    t, r = _clean(true, pad_id), _clean(recovered, pad_id)
    return _f1(lcs_length(t, r), len(t), len(r))


def text_scores(true: Tokens, recovered: Tokens, pad_id: int = 0) -> dict[str, float]:
    """All per-sequence scores as one plain dict."""
    return {
        "token_accuracy": token_accuracy(true, recovered, pad_id),
        "exact_match": float(exact_match(true, recovered, pad_id)),
        "rouge_1": rouge_n(true, recovered, 1, pad_id),
        "rouge_2": rouge_n(true, recovered, 2, pad_id),
        "rouge_l": rouge_l(true, recovered, pad_id),
    }


def match_sequences(true: Sequence[Tokens], recovered: Sequence[Tokens], pad_id: int = 0) -> list[int]:
    """For each true sequence, the index of the recovered one it is paired with (Hungarian matching that
    maximises the summed token accuracy; ROUGE-L breaks ties)."""
    from scipy.optimize import linear_sum_assignment

    score = np.array([[token_accuracy(t, r, pad_id) + 1e-3 * rouge_l(t, r, pad_id) for r in recovered] for t in true])
    rows, cols = linear_sum_assignment(-score)
    out = [0] * len(true)
    for i, j in zip(rows, cols, strict=True):
        out[int(i)] = int(j)
    return out
