"""CRD's contrast scores: all N dot products then a gather, against gathering K+1 bank rows per anchor first.

kdnas/distill/_crd.py computes ``(anchor @ memory.T).gather(1, rows)``; the reference code gathers the rows
(``index_select`` into a b x (K+1) x d tensor) and multiplies. This times both, side by side, on the same
inputs, for a digits-size bank and a CIFAR-size one, and prints the ratio.

    PYTHONPATH=. python benchmarks/crd_scores.py
"""

from __future__ import annotations

import torch
from torch.utils import benchmark


def main() -> None:
    torch.set_num_threads(1)
    b, d = 64, 128
    for n, k in [(1078, 1024), (50000, 16384)]:
        memory, anchor = torch.randn(n, d), torch.randn(b, d)
        rows = torch.randint(0, n, (b, k + 1))
        env = {"memory": memory, "anchor": anchor, "rows": rows}
        gather_first = benchmark.Timer("torch.bmm(memory[rows], anchor.unsqueeze(2))", globals=env).blocked_autorange()
        all_dots = benchmark.Timer("(anchor @ memory.t()).gather(1, rows)", globals=env).blocked_autorange()
        print(f"N={n:>6} K={k:>5}: gather first {gather_first.median * 1e3:7.2f} ms, all dot products "
              f"{all_dots.median * 1e3:7.2f} ms: {gather_first.median / all_dots.median:5.1f}x faster")


if __name__ == "__main__":
    main()
