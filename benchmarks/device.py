"""On a GPU: trials per hour at 1, 2, 4 and 8 workers per GPU, and fp32 against mixed precision (issue #28).

One prepared run (about 5 minutes on an H100 or H200; ``--budget`` scales it), printing side by side:

1. **Workers per GPU**: the mnist5k study's small students (``studies/mnist5k_rungs.yaml``'s space,
   search_spaces/mnist5k_small.yaml: 438 to 19k parameters, labels only or Hinton KD; flat, early stopping
   off) on one GPU, the same ``--trials`` candidates (drawn once, enqueued in the same order) at each worker
   count, every side in one run folder (so the teacher, trained once first, and the latency cache are shared)
   with a study database of its own. Trials per hour are counted from the first trial's start to the last
   one's end (the steady state: worker start-up, ~5 s of imports and CUDA set-up each, is printed apart);
   ratio to one worker, ``N.Nx``, and the mean validation accuracy of each side (the same candidates, so
   equal within noise unless something broke).
2. **Precision**: the study's ResNet-20 teacher (its own recipe) and one small student (Hinton KD from that
   teacher's table, the student recipe), each trained ``--seeds`` times in fp32, bf16 and fp16 in this
   process: seconds per training (after one warm-up of its own), speed-up ``N.Nx`` over fp32 (each row printed
   as soon as it is measured), validation accuracy as mean ± 90 % half-width (n seeds), and the difference to
   fp32 with its interval ("within noise" when the interval holds 0). Whether kdnas's default (``precision: fp32``) should become ``auto`` is decided on
   this table: on only where it is faster and within noise.
3. **Memory layout on CUDA**: seconds per training epoch of a ResNet-20, a MobileNetV2 and a plain CNN in
   contiguous (kdnas's CUDA layout today) against channels-last, in fp32 and bf16: kdnas keeps the
   contiguous layout on CUDA unless this shows channels-last faster.
4. **Compiling** (``--only compile``, not in the default run: ~2 minutes of compiling): a small student and the
   ResNet-20 trained eagerly against ``torch.compile`` (inductor) and its CUDA-graph mode (``reduce-overhead``):
   the first epoch (which pays the compile), the steady epoch, and after how many epochs compiling has paid
   back. Every trial is a new architecture, so the compile is paid per trial: it pays only where that number is
   below the trial's budget (the mnist5k study's students: 4 epochs).

They run in the order 2, 3, 1 (the short parts first: a run cut at its limit keeps the figures the defaults are
chosen by), each printing its rows as it measures them.

    PYTHONPATH=. python benchmarks/device.py [--out DIR] [--workers 1,2,4,8] [--trials 32] [--seeds 3]
        [--precisions fp32,bf16,fp16] [--only workers|precision|layout|compile] [--device cuda:0|cpu]
    PYTHONPATH=. python benchmarks/device.py --smoke     # on CPU in seconds (digits); its figures mean nothing

On the device machine: ``PYTHONPATH=. python benchmarks/device.py --out $OUT`` (writes device.json there).
``--mps`` runs part 1's sides again under CUDA MPS (several processes' kernels on one GPU at once): a private
control daemon with its own pipe and log folders, which only this script's processes are pointed at, quit at the
end; the GPU's settings and every other process are left as they are. ``--only workers --mps`` is that alone.
The smoke run goes through all four parts (part 4 with dynamo's ``eager`` backend: the tracing, not inductor).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402
from workers_vs_threads import candidates, enqueue  # noqa: E402

SMALL = "mnist5k_rungs.yaml"  # its space is mnist5k_small: the students where KD's effects are measurable
PRECISIONS = ("fp32", "bf16", "fp16")
LAYOUT_ARCHS = [{"family": "resnet_cifar", "depth": 20, "width": 1.0},
                {"family": "mobilenetv2", "blocks": [1, 1, 1], "expansion": 4, "kernel_size": 5, "width": 1.0},
                {"family": "plain_cnn", "channels": [16, 16, 32, 32], "hidden": 0, "kernel_size": 5, "pool_every": 2}]
SMALL_STUDENT = {"family": "plain_cnn", "channels": [8, 16], "pool_every": 1, "kernel_size": 3}
COMPILE_ARCHS = [SMALL_STUDENT, LAYOUT_ARCHS[0]]
BRIEF_EPOCHS = 4  # the mnist5k study's student budget: a compile paid per trial must pay back within it


def study_overrides(device: str, trials: int) -> dict:
    # Flat (the rung study's budget ladder off) so every candidate trains the same epochs at every worker count;
    # early stopping off for the same reason. Latency on the CPU beside the training, as a GPU user runs it.
    # The mnist5k study's brief budget (4 epochs) for the students.
    return {"name": "device", "device": device, "threads": 2, "student": {"train": {"epochs": BRIEF_EPOCHS}},
            "search": {"trials": trials, "rungs": None, "early_stopping": {"enabled": False}}}


def throughput(args, tmp: Path, device: str) -> list[dict]:
    study = _studies.derive(SMALL, tmp, study_overrides(device, args.trials), smoke=args.smoke)
    params = candidates(study, args.trials, seed=0)
    if not args.smoke:  # the smoke run's first side trains its 1-epoch digits teacher itself: one process fewer
        t = _studies.pretrain_teacher(study, tmp, [tmp])
        print(f"teacher trained once in {t:.1f}s", flush=True)
    sides = []
    # A warm-up side (not counted): measures each student's latency and fills the caches every side then shares.
    # The warm-up trains one candidate per student architecture: each one's latency is then in the cache.
    firsts = list({json.dumps({k: v for k, v in p.items() if k.startswith("student")}, sort_keys=True): p
                   for p in reversed(params)}.values())
    counts = ([] if args.smoke else [(0, None)]) + [(n, None) for n in args.workers]
    if args.mps:  # the same sides again under a private MPS daemon (measured after the plain ones, same caches)
        counts += [(n, "mps") for n in args.workers]
    mps = None
    try:
        for n, how in counts:
            if how == "mps" and mps is None:
                mps = _start_mps(tmp)
                if mps is None:
                    break
            sides += _side(tmp, study, firsts if n == 0 else params, n, how, mps, sides)
    finally:
        if mps is not None:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env=mps, check=False)
    return sides


def _start_mps(tmp: Path) -> dict | None:
    """A private MPS control daemon (its own pipe and log folders, so only processes given this environment use
    it: the GPU's settings and every other process are left as they are); the environment for its clients."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        print("MPS: nvidia-cuda-mps-control is not installed here; skipped", flush=True)
        return None
    env = {**_studies.child_env(), "CUDA_MPS_PIPE_DIRECTORY": str(tmp / "mps-pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(tmp / "mps-log")}
    for d in ("mps-pipe", "mps-log"):
        (tmp / d).mkdir(exist_ok=True)
    started = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, capture_output=True, text=True)
    if started.returncode:
        print(f"MPS: the daemon did not start ({started.stderr.strip() or started.returncode}); skipped", flush=True)
        return None
    print("MPS: a private control daemon started for the sides that follow", flush=True)
    return env


def _side(tmp: Path, study: Path, params: list[dict], n: int, how: str | None, env: dict | None,
          sides: list[dict]) -> list[dict]:
    """Train ``params`` with ``n`` workers (0: the uncounted warm-up, one worker) in a study database of its own."""
    name = f"w{n}{'-' + how if how else ''}"
    storage = f"sqlite:///{tmp / name}.db"
    enqueue(study, tmp, params, storage)
    wall, _ = _studies.kdnas_search(study, tmp, ["--trials", str(len(params)), "--workers", str(max(n, 1)),
                                                 "--storage", storage], log=tmp / f"{name}.log", env=env)
    done = [x for x in _studies.trials(tmp, study, storage) if x.state.name == "COMPLETE"]
    if n == 0:
        print(f"warm-up: {len(done)} trials in {wall:.1f}s (latencies measured, caches filled)", flush=True)
        return []
    first = min(x.datetime_start for x in done)
    last = max(x.datetime_complete for x in done)
    steady = (last - first).total_seconds()
    accs = [x.user_attrs["val_accuracy"] for x in done]
    s = {"workers": n, "mps": how == "mps", "trials": len(done), "wall_s": wall, "steady_s": steady,
         "per_hour": 3600 * len(done) / steady if steady > 0 else float("nan"),
         "val_mean": statistics.fmean(accs) if accs else float("nan")}
    one = sides[0]["per_hour"] if sides else s["per_hour"]
    print(f"{n} worker(s){' under MPS' if how else ''}: {s['trials']} trials, {s['steady_s']:.1f}s first start to "
          f"last end ({s['wall_s']:.1f}s command), {s['per_hour']:.0f} trials/hour, {s['per_hour'] / one:.1f}x one "
          f"worker without MPS; mean val accuracy {s['val_mean']:.1%}", flush=True)
    return [s]


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def precision(args, tmp: Path, device_name: str) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from kdnas.candidates import difference, estimate
    from kdnas.config import load_study
    from kdnas.data import load_split
    from kdnas.distill import make_loss
    from kdnas.models import build, make_spec
    from kdnas.train import accuracy, fit, resolve_precision

    cfg = load_study(_studies.derive(SMALL, tmp / "precision", study_overrides(device_name, 1), smoke=args.smoke))
    device = torch.device(device_name)
    sync = _sync(device)
    split = load_split(cfg.data, device, cfg.path)
    n_val = len(split.val)
    student_spec = make_spec(SMALL_STUDENT)
    teacher_spec, t_recipe, s_recipe = cfg.teacher_spec, cfg.teacher.train, cfg.student.train
    # The smoke run skips fp16 (the gradient scaler's path is tests/test_precision.py's): seconds count there.
    asked = ["fp32", *[p for p in args.precisions if p != "fp32"]]  # fp32 first: the reference
    available = [p for p in (asked[:2] if args.smoke else asked) if _runs(resolve_precision, p, device)]
    rows = []

    def train(spec, recipe, seed, prec, teacher=None):
        torch.manual_seed(seed)
        model = build(spec, split.input_shape, split.num_classes).to(device)
        if teacher is None:
            run = lambda: fit(model, split.train, recipe, lambda o, b: F.cross_entropy(o, b.y), seed, precision=prec)  # noqa: E731
            return _timed(run, sync), accuracy(model, split.val), model
        with make_loss(("hinton", {"temperature": 4.0, "alpha": 0.9}), model, teacher, split.train) as (loss_fn, extra):
            run = lambda: fit(model, split.train, recipe, loss_fn, seed, extra=extra, precision=prec)  # noqa: E731
            return _timed(run, sync), accuracy(model, split.val), model

    reference_teacher = None
    for what, spec, recipe in (("teacher " + teacher_spec.label(), teacher_spec, t_recipe),
                               ("student " + student_spec.label(), student_spec, s_recipe)):
        is_student = what.startswith("student")
        teacher = reference_teacher if is_student else None
        base = base_s = None
        for prec in available:  # fp32 first: each row is printed as soon as it is measured
            if not args.smoke:  # one untimed training first: cuDNN's algorithm search and autocast's caches
                train(spec, recipe, 99, prec, teacher)
            runs = [train(spec, recipe, seed, prec, teacher) for seed in range(args.seeds)]
            if not is_student and prec == "fp32":
                reference_teacher = runs[0][2].eval()
            secs = statistics.median(r[0] for r in runs)
            e = estimate([r[1] for r in runs], n_val, 1.0)
            if base is None:
                base, base_s = e, secs
            d = difference(e, base)
            rows.append({"network": what, "precision": prec, "seconds": secs, "speedup": base_s / secs,
                         "val": e.mean, "val_half": e.half_width, "n": e.n, "diff": d.mean, "diff_lo": d.lo,
                         "diff_hi": d.hi, "within_noise": d.within_noise})
            r = rows[-1]
            print(f"{what:42s} {prec}: {secs:6.2f}s per training (median of {e.n}), {r['speedup']:.1f}x fp32; "
                  f"val {e.text()}; minus fp32 {100 * d.mean:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"
                  f"{' within noise' if d.within_noise else ''}", flush=True)
    return rows


def _runs(resolve, prec: str, device) -> bool:
    try:
        return resolve(prec, device) == prec
    except Exception as err:  # bf16 on a GPU without it: say so, measure the others
        print(f"{prec}: skipped ({err})", flush=True)
        return False


def layout(args, device_name: str) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import kdnas.train._fit as fit_module
    from kdnas.models import build, make_spec
    from kdnas.train import fit, resolve_precision

    device = torch.device(device_name)
    sync = _sync(device)
    data, shape, recipe = _epoch_work(args, device)
    original = fit_module.fast_memory_format
    rows = []
    try:
        for arch in LAYOUT_ARCHS[-1:] if args.smoke else LAYOUT_ARCHS:
            spec = make_spec(arch)
            for prec in ("fp32", "bf16"):
                if not _runs(resolve_precision, prec, device):
                    continue
                times = {}
                for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                    fit_module.fast_memory_format = lambda _d, fmt=fmt: fmt
                    model = build(spec, shape, 10).to(device)
                    step = lambda: fit(model, data, recipe, lambda o, b: F.cross_entropy(o, b.y), 0, precision=prec)  # noqa: E731
                    step()  # warm-up: cuDNN's algorithm search for this layout
                    times[name] = min(_timed(step, sync) for _ in range(1 if args.smoke else 3))
                rows.append({"network": spec.label(), "precision": prec, **times,
                             "ratio": times["contiguous"] / times["channels_last"]})
                print(f"{spec.label():60s} {prec}: contiguous {times['contiguous']:.3f}s, channels-last "
                      f"{times['channels_last']:.3f}s per epoch: channels-last {rows[-1]['ratio']:.2f}x", flush=True)
    finally:
        fit_module.fast_memory_format = original
    return rows


def _sync(device):
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _epoch_work(args, device):
    """What parts 3 and 4 time: one epoch of an MNIST-5k-sized set (random images: speed only) at batch 128."""
    import torch

    from kdnas.data import TensorSource
    from kdnas.train import TrainRecipe

    n = 512 if args.smoke else 4000
    shape = (1, 8, 8) if args.smoke else (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    data = TensorSource(torch.randn(n, *shape, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device))
    return data, shape, TrainRecipe(epochs=1, batch_size=128, lr=0.05)


def compiling(args, device_name: str) -> list[dict]:
    """Part 4: eager against ``torch.compile`` per network. The total of E epochs is ``first + (E - 1) * steady``
    on each side; compiling pays back after the E where the totals meet."""
    import torch
    import torch.nn.functional as F

    from kdnas.models import build, make_spec
    from kdnas.train import fit

    device = torch.device(device_name)
    sync = _sync(device)
    data, shape, recipe = _epoch_work(args, device)
    if args.smoke:  # dynamo's tracing and guards through fit, without inductor's minutes of code generation
        modes = [("eager", None), ("compile", {"backend": "eager"})]
    else:
        modes = [("eager", None), ("compile", {})]
        if device.type == "cuda":
            modes.append(("compile+cudagraphs", {"mode": "reduce-overhead"}))
    rows = []
    for arch in COMPILE_ARCHS[:1] if args.smoke else COMPILE_ARCHS:
        spec = make_spec(arch)
        times = {}
        for name, how in modes:
            torch._dynamo.reset()  # every trial compiles a new architecture: no cache from the previous side
            torch.manual_seed(0)
            model = build(spec, shape, 10).to(device)
            if how is not None:  # in place (nn.Module.compile): fit sees the same module, names and state
                model.compile(**how)
            epoch = lambda: fit(model, data, recipe, lambda o, b: F.cross_entropy(o, b.y), 0)  # noqa: E731
            try:
                first = _timed(epoch, sync)
                times[name] = (first, min(_timed(epoch, sync) for _ in range(1 if args.smoke else 3)))
            except Exception as err:  # a compiler missing or failing on the device machine: say so, keep the rest
                print(f"{spec.label():60s} {name}: failed ({str(err).strip().splitlines()[0][:200]})", flush=True)
        if "eager" not in times:
            continue
        e_first, e_steady = times["eager"]
        for name, (first, steady) in times.items():
            gain = e_steady - steady
            pays = 1 + (first - e_first) / gain if name != "eager" and gain > 0 else None
            rows.append({"network": spec.label(), "mode": name, "first_epoch_s": first, "epoch_s": steady,
                         "speedup": e_steady / steady, "pays_back_after_epochs": pays})
            verdict = ("" if name == "eager" else f"; pays back after {pays:.0f} epochs" if pays is not None
                       else "; never pays back (no faster per epoch)")
            print(f"{spec.label():60s} {name}: first epoch {first:.2f}s, then {steady:.3f}s per epoch "
                  f"({e_steady / steady:.2f}x eager){verdict}", flush=True)
    print(f"(a compile is paid per trial: it pays where it pays back within the {BRIEF_EPOCHS} epochs of a brief "
          "trial)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts on the one GPU (comma-separated)")
    ap.add_argument("--trials", type=int, default=32, help="candidates trained at each worker count")
    ap.add_argument("--seeds", type=int, default=3, help="trainings per network and precision")
    ap.add_argument("--precisions", default=",".join(PRECISIONS),
                    help="part 2's precisions (comma-separated; fp32, the reference, always runs first)")
    ap.add_argument("--only", choices=["workers", "precision", "layout", "compile"],
                    help="one part only (compile runs only when named, or in the smoke run)")
    ap.add_argument("--mps", action="store_true", help="also run part 1's sides under a private CUDA MPS daemon "
                                                       "(its own pipe folder: no other process is affected)")
    ap.add_argument("--device", help="the device measured (default cuda:0; `cpu` runs the full script on a CPU, to check it "
                                     "before a GPU session: its figures are the CPU's)")
    ap.add_argument("--out", help="write device.json (every figure) into this folder")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder, removed)")
    ap.add_argument("--smoke", action="store_true", help="on the CPU, digits, 1 worker, 2 trials, 1 seed, in "
                                                         "seconds (tests/test_benchmarks.py); figures mean nothing")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not set(args.precisions) <= set(PRECISIONS):
        ap.error(f"--precisions: expected some of {', '.join(PRECISIONS)}, got {','.join(args.precisions)}")
    import torch

    if args.smoke:
        # One worker: a second one's start costs ~10 s here, and tests/test_workers.py runs two workers already.
        args.workers, args.trials, args.seeds = [1], 2, 1
        device = "cpu"
    elif args.device:
        device = args.device
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/device.py measures a GPU: CUDA is not available here (--smoke or --device cpu run the "
                 "code on a CPU)")
    else:
        device = "cuda:0"
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"CPU ({device})"
    print(f"{gpu}; torch {torch.__version__}; {_studies.machine()}; {datetime.datetime.now():%Y-%m-%d %H:%M}", flush=True)
    result: dict = {"device": gpu, "torch": torch.__version__}
    t0 = time.perf_counter()
    with _studies.work_folder(args.keep, "kdnas-device-") as tmp:
        # The short parts first (about a minute together on a GPU, by their work): a run cut at its limit during
        # the long one, the workers' sides, still has the figures the default precision and layout are chosen by.
        if args.only in (None, "precision"):
            result["precision"] = precision(args, tmp, device)
        if args.only in (None, "layout"):
            result["layout"] = layout(args, device)
        if args.only in (None, "workers"):
            result["workers"] = throughput(args, tmp, device)
        if args.only == "compile" or args.smoke and args.only is None:
            result["compile"] = compiling(args, device)
    print(f"total {time.perf_counter() - t0:.0f}s", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "device.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
