"""Latency measured in a child process: beside the training on a spare core, or after it.

Measuring a candidate's latency in the training process costs the study that time on every new
architecture, and right after a training burst that process's figures come out high for seconds
(docs/costs.md, "In a study"). A child process that only builds networks and times them avoids both where
it can:

- ``beside``: when a core is free, the child measures while the study trains the candidate, and the study
  waits only when it needs the figure before the child has it.
- ``after``: when every core trains, the child measures once the training has ended, while the study
  evaluates the trained student on the cores the child leaves it (``Pending.meanwhile``) and then waits
  for the rest. The evaluation slows the child's samples, so the child confirms nothing before the study
  waits (``hold``), then needs a share of ``min_seconds`` after that (``_RELEASED`` in _timing.py); the
  slowed samples only add to the slow end of each step. The child has not just trained: on
  this 2-core VM its figures came within 2-5 % of `kdnas profile`'s (median), where the study's own process
  was 7-10 % off, with the same 2-s budget (docs/performance.md).

It runs in a process of its own, not a thread: the step-by-step timing is Python-heavy, and under one GIL
it would slow the training and be slowed by it. Requests and answers are JSON lines over its stdin and
stdout, answered in order. It ends when its stdin closes: when the study closes it, and when the study's
process dies, however it dies (the pipe closes with it).

``background: auto`` (the default) picks ``beside`` when the latency device is the CPU and a core is spare
(fewer torch threads in use by the study's workers than cores, by at least ``costs.latency.threads``) or
the training runs on a GPU (the CPU then mostly waits for it), and ``after`` when the latency device is the
CPU and every core trains. Measuring a GPU's latency beside a training on a GPU would disturb both, so a
GPU latency is measured in the study's process (``here``), as is every latency with ``background: false``;
``background: true`` is ``beside``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import Callable

import torch

from kdnas.core import TrialFailure
from kdnas.costs._setting import LatencySetting
from kdnas.models import ArchSpec

log = logging.getLogger(__name__)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


BESIDE, AFTER, HERE = "beside", "after", "here"


def measuring_place(setting: LatencySetting, training_device: torch.device, threads_in_use: int) -> str:
    """Where a study measures latency (``setting.background``, ``auto`` resolved): :data:`BESIDE` the
    training in a child process, in a child process :data:`AFTER` the training (while the study evaluates
    the student, then waits), or :data:`HERE` in the study's process. See the module docstring."""
    if setting.background != "auto":
        return BESIDE if setting.background else HERE
    if torch.device(setting.device).type != "cpu":
        return HERE
    if training_device.type != "cpu" or usable_cores() - threads_in_use >= setting.threads:
        return BESIDE
    return AFTER


class ServiceError(RuntimeError):
    """The child process is gone or answered nonsense; the caller measures in its own process instead."""


class LatencyService:
    """A child process that measures latencies one request at a time, in request order."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", "from kdnas.costs._child import main; main()"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1, env=dict(os.environ))
        self._lock = threading.Lock()
        self._sent = 0
        self._answers: dict[int, dict] = {}

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting,
               hold: bool = False) -> Callable[[], dict]:
        """Start measuring ``spec``; the returned callable waits for the figures (a :class:`Latency` as a dict).
        ``hold``: the caller's work beside the measurement may slow every sample until it waits, so the
        child confirms nothing before then (``hold`` of :func:`~kdnas.costs._timing.measure_calls`)."""
        with self._lock:
            number = self._sent
            self._send({"request": number, "spec": spec.to_dict(), "input_shape": list(input_shape),
                        "num_classes": num_classes, "setting": asdict(setting), "hold": hold})
            self._sent += 1
        return lambda: self._wait(number)

    def _send(self, message: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError) as err:  # a closed pipe: the child is gone
            raise ServiceError(f"the latency process is gone ({err})") from None

    def _wait(self, number: int) -> dict:
        with self._lock:
            if number not in self._answers:
                self._send({"waiting": number})  # ends a measurement that went on past max_seconds
            while number not in self._answers:
                line = self._proc.stdout.readline()
                if not line:
                    raise ServiceError(f"the latency process ended (exit code {self._proc.poll()})")
                try:
                    answer = json.loads(line)
                    self._answers[answer.pop("request")] = answer
                except (ValueError, KeyError, AttributeError):
                    raise ServiceError(f"the latency process answered {line.strip()[:80]!r}") from None
            answer = self._answers.pop(number)
        if "error" in answer:
            raise TrialFailure(f"latency measurement failed: {answer['error']}")
        return answer["latency"]

    def close(self) -> None:
        """End the child. A measurement in hand is abandoned: nobody waits for it any more, and the child
        writes nothing but its answers (the probe's file is replaced atomically)."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=0.5)  # an idle child exits on its own as soon as it sees the closed pipe
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
