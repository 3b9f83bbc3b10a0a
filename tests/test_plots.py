"""The report's figures read as a person expects."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kdnas.results._plots import plain_log_ticks  # noqa: E402


@pytest.mark.parametrize("low, high", [(0.31, 0.93), (0.045, 3.2), (1.5, 48.0), (0.02, 40.0), (0.004, 90.0)])
def test_latency_ticks_are_plain_milliseconds(low: float, high: float) -> None:
    # Under a decade or two, matplotlib's own log axis labels minor ticks as 3x10^-1, 4x10^-1, ... (they overlap).
    fig, ax = plt.subplots(figsize=(6, 4.8))
    ax.scatter([low, high], [1, 2])
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, low, high)
    fig.canvas.draw()
    shown = [t for t in ax.get_xticklabels(which="both") if t.get_text() and low * 0.9 <= t.get_position()[0] <= high * 1.1]
    texts = [t.get_text() for t in shown]
    assert len(texts) >= 2, texts
    for text in texts:
        float(text)  # a plain decimal: no 10^k, no mathtext
    boxes = [t.get_window_extent() for t in shown]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), texts
    plt.close(fig)
