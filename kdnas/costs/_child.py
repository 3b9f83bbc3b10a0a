"""The child process of :mod:`kdnas.costs._background`: it builds the networks the study sends and times them.

Apart from the parent's side so that the parent never imports the timing code it hands off (and the two
modules do not import each other): the study's process talks to this one over JSON lines only.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

import torch

from kdnas.costs._setting import LatencySetting


def _warm_up(seconds: float = 0.3) -> None:
    """A process's first passes are slow (memory, kernels): run the probe network a moment before any request."""
    import time

    from kdnas.costs._probe import Probe

    model, x = Probe("warm-up").workload()
    start = time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            model(x)


class _Lines:
    """Lines from a file descriptor, read without Python's buffering, so that ``waiting`` can tell whether
    one has arrived without taking it (``select`` on the descriptor; a buffered reader would hide lines)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def waiting(self) -> bool:
        """Whether a line (or the end of input) is there to read."""
        return b"\n" in self.buffer or bool(select.select([self.fd], [], [], 0)[0])

    def quiet(self) -> bool:
        """Nothing new from the study yet: it has not started waiting, nor sent another request."""
        return not self.waiting()

    def next(self) -> bytes | None:
        """The next line, waiting for it; None at the end of input."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def main() -> None:
    """The child process's entry point: serve, then end at once, without the interpreter's teardown.

    Why: tearing down a process that holds torch takes about half a second (0.50-0.66 s from the closed stdin to
    the exit on the VM, 0.04 s with ``os._exit``), and the study waits for its child at every close
    (``LatencyService.close``). Nothing here needs tearing down: each answer is flushed as it is written and the
    probe's file is replaced atomically. An exception still ends the process the usual way (traceback, exit 1).
    """
    serve()
    sys.stderr.flush()
    os._exit(0)


def serve() -> None:
    """The child's loop: one JSON request per stdin line, one JSON answer per stdout line, until stdin closes.

    A measurement that is not confirmed by ``max_seconds`` goes on while nothing new has arrived on stdin:
    the study is still training and nobody waits for the figure, and every second beside the training
    improves the floor. The study sends a line when it starts waiting (or its next request); then the
    measurement ends at once.
    """
    from kdnas.core import _malloc
    from kdnas.costs._latency import measure_latency
    from kdnas.models import build, make_spec

    _malloc.tune()  # as in the study's process, which measures when the child cannot: the same figures
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the study's to handle; it closes our stdin
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from libraries go to stderr, not the protocol
    sys.stdout = sys.stderr
    torch.set_num_threads(1)
    _warm_up()
    lines = _Lines(sys.stdin.fileno())
    while (line := lines.next()) is not None:
        request = json.loads(line)
        if "spec" not in request:
            continue  # someone waiting for a measurement that has already been answered
        try:
            setting = LatencySetting(**request["setting"])
            torch.set_num_threads(setting.threads)
            shape = tuple(request["input_shape"])
            model = build(make_spec(request["spec"]), shape, request["num_classes"])
            figures = measure_latency(model, shape, setting, more=lines.quiet,
                                      hold=lines.quiet if request.get("hold") else None)
            answer = {"latency": figures.to_dict()}
        except Exception as err:  # noqa: BLE001 - every failure goes back to the study, which records it
            first = (str(err).strip().splitlines() or [""])[0]
            answer = {"error": f"{type(err).__name__}: {first}"}
        try:
            answers.write(json.dumps({"request": request["request"], **answer}) + "\n")
            answers.flush()
        except OSError:  # the study is gone
            return
