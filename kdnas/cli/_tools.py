"""The commands on a bundle (train, deploy, predict) and the inspection tools (space, profile)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def cmd_train(args: argparse.Namespace) -> int:
    from kdnas.bundle import train_bundle

    try:
        result = train_bundle(args.bundle, args.epochs, args.device, threads=args.threads, force=args.force,
                              precision=args.precision)
    except KeyboardInterrupt:  # the last epoch's state is on disk (written atomically): one line, no traceback
        print("interrupted: run the same command again to continue after the last finished epoch", file=sys.stderr)
        return 130
    print(f"trained {args.bundle} for {result['epochs']} epochs: val {result['val_accuracy']:.2%}, "
          f"test {result['test_accuracy']:.2%}; weights in {Path(args.bundle) / 'weights_full.pt'}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from kdnas.bundle import deploy

    for path in deploy(Path(args.bundle), args.format):
        print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from kdnas.bundle import predict_images, write_csv

    rows = predict_images(args.bundle, args.images, brief=args.brief)
    if args.out:
        write_csv(rows, Path(args.out))
    print(f"{len(rows)} predictions in {args.out}" if args.out else
          "\n".join(f"{r['path']}\t{r['class']}\t{r['probability']:.3f}" for r in rows))
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    import json

    from kdnas.config import open_space, sample_candidates, size_range

    space, target = open_space(args.file, args.input, args.classes)
    where = f"input {','.join(map(str, target.input_shape))}, {target.num_classes} classes"
    if args.action == "show":
        sizes = size_range(space, target)
        if args.json:
            print(json.dumps({"parameters": dict(space.describe()), "limits": vars(space.limits), "sizes": sizes}, indent=2))
            return 0
        print(f"search space {space.path} ({where})")
        for name, domain in space.describe():
            print(f"  {name:<40} {domain}")
        lim = {k: v for k, v in vars(space.limits).items() if v is not None}
        print(f"limits: {', '.join(f'{k}={v:,}' for k, v in lim.items()) or 'none'}")
        for family, r in sizes.items():
            if r["params"]:
                print(f"{family}: {r['params'][0]:,} .. {r['params'][1]:,} params, {r['macs'][0]:,} .. {r['macs'][1]:,} MACs "
                      f"over {r['corners']} domain corners ({r['corners_over_limits']} over the limits)")
        return 0
    rows = sample_candidates(space, target, args.n, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} candidates from {space.path} ({where}, seed {args.seed})")
    for i, r in enumerate(rows):
        chain = " > ".join(f"{a['params']:,}" for a in r["chain"]["assistants"])
        print(f"{i:>3}  {r['params']:>10,} params {r['macs']:>13,} MACs  {r['label']}" + (f"  (assistants: {chain})" if chain else ""))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from kdnas.costs import check_setting, format_profile, load_arch, profile

    spec = load_arch(Path(args.arch))
    flags = {"device": args.device, "batch_size": args.batch_size, "threads": args.threads, "dtype": args.dtype,
             "min_seconds": args.min_seconds, "max_seconds": args.max_seconds}
    setting = None if args.no_latency else check_setting({k: v for k, v in flags.items() if v is not None}, "kdnas profile")
    table = None
    if args.estimate and setting is not None:
        from kdnas.costs import LatencyTable

        table = LatencyTable()
    result = profile(spec, args.input, args.classes, args.counter, setting, table,
                     say=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1) if args.json else format_profile(result))
    return 0
