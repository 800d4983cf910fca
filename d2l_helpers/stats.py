"""Summaries over seeds: the spread of one number, and how often one method beats another.

One run is one sample: the book's MXNet fine-tune, unseeded, ended anywhere between 0.684
and 0.946 over 78 published builds and lost to the scratch run 9 times. Compare methods by
`spread` over several seeds and by `paired_wins` on the same seeds.

Example:
    >>> spread([0.88, 0.90, 0.86])
    {'n': 3, 'mean': 0.88, 'sd': 0.02, 'min': 0.86, 'max': 0.9}
    >>> paired_wins({0: 0.88, 1: 0.90, 2: 0.70}, {0: 0.50, 1: 0.90, 2: 0.75})
    {'seeds': 3, 'wins': 1, 'ties': 1, 'losses': 1}
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping


def spread(values: Iterable[float]) -> dict[str, float]:
    """Count, mean, sample standard deviation (0 for one value), min and max, rounded to
    10 decimals so that sums of floats print cleanly."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread() needs at least one value")
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 10), "sd": round(sd, 10),
            "min": min(vals), "max": max(vals)}


def paired_wins(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, int]:
    """On the seeds both have: how often ``a``'s value is above, equal to, below ``b``'s."""
    seeds = sorted(set(a) & set(b))
    wins = sum(a[s] > b[s] for s in seeds)
    ties = sum(a[s] == b[s] for s in seeds)
    return {"seeds": len(seeds), "wins": wins, "ties": ties, "losses": len(seeds) - wins - ties}
