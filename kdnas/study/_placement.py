"""Where each worker of ``kdnas search --workers N`` trains: spread over the machine's GPUs (issue #28).

With ``device: cuda`` (no index) the workers go round robin over the GPUs ``parallel.gpus`` names (default:
every visible one), so 8 workers on 2 GPUs are 4 per GPU; ``parallel.workers_per_gpu: K`` takes only the first
``ceil(N / K)`` of those GPUs (8 workers at 4 per GPU on a 4-GPU machine: GPUs 0 and 1, two left for other
work), and a machine with too few is one clear error. Each worker is pinned by its device index
(``cuda:1``): the worker's training, its students and its assistants live there. With ``device: cuda:N`` the
user chose one GPU: every worker goes there. Any other device (``cpu``, ``mps``) is every worker's as it is.

The parent process trains (or loads) the teachers on the study's device before the workers start, once; every
worker then loads them from the run folder's store onto its own GPU, and reads the same logit tables.

Why device indices and not ``CUDA_VISIBLE_DEVICES``: a worker is a spawned interpreter that reloads the study file
with overrides (kdnas/study/_workers.py), so its device is one more override, visible in its progress lines and
its trials' attributes, and the latency child of the worker (``costs.latency.device: cuda``) is placed by the same
index rule. Masking the visible devices would renumber the GPUs inside the worker (``cuda:0`` everywhere), which
reads wrong in a log.
"""

from __future__ import annotations

from typing import Sequence

from kdnas.core import KdnasError


def worker_devices(device: str, workers: int, gpus: Sequence[int] | None, gpu_count: int,
                   per_gpu: int | None = None) -> list[str]:
    """The device of each of ``workers`` workers for the study's ``device``, ``parallel.gpus`` (None: all),
    ``parallel.workers_per_gpu`` (None: no cap) and the machine's ``gpu_count``; raises :class:`KdnasError` for a
    GPU the machine does not have, or too few GPUs for the cap."""
    if device.startswith("cuda:") and per_gpu is not None and workers > per_gpu:
        raise KdnasError(f"parallel.workers_per_gpu: {workers} workers on the one GPU {device} exceed "
                         f"{per_gpu} per GPU (use `device: cuda` to spread them over several)")
    if device != "cuda":  # cpu, mps (no cap: a study file moved to a laptop still runs), or one GPU the user named
        return [device] * workers
    if gpu_count < 1:
        raise KdnasError("device 'cuda' was asked for, but CUDA is not available on this machine")
    chosen = list(range(gpu_count)) if gpus is None else list(gpus)
    missing = [g for g in chosen if g >= gpu_count]
    if missing:
        raise KdnasError(f"parallel.gpus: GPU {missing[0]} was asked for, but this machine has {gpu_count} "
                         f"(0..{gpu_count - 1})")
    if per_gpu is not None:
        needed = -(-workers // per_gpu)
        if needed > len(chosen):
            raise KdnasError(f"parallel.workers_per_gpu: {workers} workers at {per_gpu} per GPU need {needed} GPUs, "
                             f"but {len(chosen)} {'is' if len(chosen) == 1 else 'are'} available "
                             f"({', '.join(f'cuda:{g}' for g in chosen)})")
        chosen = chosen[:needed]  # round robin over those: 6 workers at 4 per GPU are 3 + 3, not 4 + 2
    return [f"cuda:{chosen[i % len(chosen)]}" for i in range(workers)]


def placement_line(devices: Sequence[str]) -> str:
    """``on cuda:0 (2 workers), cuda:1 (2 workers)``: what the command says when it starts its workers; empty
    when they all share one device that is not a GPU."""
    if not any(d.startswith("cuda") for d in devices):
        return ""
    counts: dict[str, int] = {}
    for d in devices:
        counts[d] = counts.get(d, 0) + 1
    return "on " + ", ".join(f"{d} ({n} worker{'s' * (n > 1)})" for d, n in counts.items())
