"""The verdict's one number format (pure Python: the CLI imports it without numpy or
scikit-learn)."""

from __future__ import annotations

import math


def figures(*values: float, digits: int = 3) -> list[str]:
    """``values`` in one number format, to be read side by side: as many decimals as the
    smallest non-zero magnitude among them needs to show ``digits`` significant digits (at
    least 4, at most 8), the same for all. A score of 1 reads "1.0000", never "1", and a
    difference of 0.0044 beside one of 0.001467 reads "0.00440" and "0.00147"."""
    magnitudes = [abs(v) for v in values if math.isfinite(v) and v != 0]
    needed = [digits - 1 - math.floor(math.log10(m)) for m in magnitudes]
    decimals = min(max([4, *needed]), 8)
    return [f"{v:.{decimals}f}" for v in values]
