"""Fixed-bin value histograms: how window percentiles survive per-day caching.

A percentile cannot be merged from daily percentiles, but histograms add up.
Each VM-day keeps one histogram per metric; a window's percentile is read
from the sum of its days, so a re-run over cached days never touches raw
values.  Percentages use 0.1-point bins (the precision the agent sends);
byte rates, which span fifteen orders of magnitude, use 40 log-spaced bins
per decade (each bin ~6% wide), so a rate percentile is exact to within 6%.

Percentiles are nearest-rank: the smallest bin value v such that at least
q% of the minutes are <= v (numpy's ``method="inverted_cdf"``), returned as
the bin's value (percentages) or its geometric midpoint (rates).
"""

import numpy as np

#: Bins of a percentage histogram: 0.0, 0.1, ... 100.0.
PCT_BINS = 1001
#: Log-spaced bins per decade of a byte-rate histogram.
RATE_PER_DECADE = 40
#: Rates below 1 B/s fall in bin 0 (valued 0); bins 1.. cover 1 B/s to 1e15 B/s.
RATE_BINS = 15 * RATE_PER_DECADE + 2


def pct_bin(values: np.ndarray) -> np.ndarray:
    """Bin index of percentages (NaN must be removed by the caller)."""
    return np.clip(np.rint(values * 10.0), 0, PCT_BINS - 1).astype(np.int32)


def rate_bin(values: np.ndarray) -> np.ndarray:
    """Bin index of byte rates (NaN must be removed by the caller)."""
    out = np.zeros(len(values), np.int32)
    positive = values >= 1.0
    out[positive] = 1 + np.floor(np.log10(values[positive]) * RATE_PER_DECADE).astype(np.int32)
    return np.clip(out, 0, RATE_BINS - 1)


PCT_VALUES = np.arange(PCT_BINS) / 10.0
RATE_VALUES = np.concatenate([[0.0], 10.0 ** ((np.arange(1, RATE_BINS) - 0.5) / RATE_PER_DECADE)])


def percentiles(hist: np.ndarray, q, values: np.ndarray) -> np.ndarray:
    """Nearest-rank percentile ``q`` (scalar or one per row) of each row of ``hist``.

    Rows with no counts give NaN.
    """
    hist = np.asarray(hist)
    if hist.ndim == 1:
        hist = hist[None, :]
    cum = np.cumsum(hist, axis=1, dtype=np.int64)
    total = cum[:, -1]
    need = np.ceil(np.asarray(q, dtype=float) / 100.0 * total - 1e-9)
    need = np.maximum(need, 1)
    index = np.argmax(cum >= need[..., None] if np.ndim(need) else cum >= need, axis=1)
    out = values[index].astype(float)
    out[total == 0] = np.nan
    return out


def share_below(hist: np.ndarray, limit, values: np.ndarray) -> np.ndarray:
    """Share of counts in bins valued below ``limit`` (scalar or one per row)."""
    hist = np.asarray(hist)
    limit = np.asarray(limit, dtype=float)
    below = values[None, :] < (limit[:, None] if limit.ndim else limit)
    total = hist.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (hist * below).sum(axis=1) / np.maximum(total, 1), np.nan)
