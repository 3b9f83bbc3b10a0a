"""What does a shared store's claim cost? (docs/performance.md, "Shared artifacts")

With ``artifacts: {url: ...}`` every teacher, assistant and logit table is computed under a claim in the study's
database (kdnas/study/_claims.py): an insert, a heartbeat thread, a delete. This times ``--claims`` uncontended
claims (``with claims(name): pass``, after one warm-up that creates the table) on a fresh SQLite study database
and, where PostgreSQL's server binaries are installed, on a throwaway PostgreSQL cluster on 127.0.0.1 (the
tests' own, tests/_postgres.py). Printed per storage: median and 10th-90th percentile in milliseconds.

    PYTHONPATH=. python benchmarks/claims.py [--claims 100] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cost(url: str, n: int) -> str:
    from kdnas.study import rdb_storage
    from kdnas.study._claims import StorageClaims

    claims = StorageClaims(lambda: rdb_storage(url).engine, lease=60)
    with claims("warm-up"):
        pass
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        with claims(f"k{i}"):
            pass
        times.append(1000 * (time.perf_counter() - t0))
    q = statistics.quantiles(times, n=10) if n >= 2 else times * 9
    return f"median {statistics.median(times):.1f} ms, 10-90 % {q[0]:.1f}-{q[-1]:.1f} ms over {n} claims"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="5 claims on SQLite only: seconds, figures meaningless")
    args = ap.parse_args()
    n = 5 if args.smoke else args.claims
    with tempfile.TemporaryDirectory(prefix="kdnas-claims-") as folder:
        print(f"sqlite     {cost(f'sqlite:///{folder}/study.db', n)}")
    if args.smoke:
        return
    from tests._postgres import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        print("postgresql (server binaries not installed: skipped)")
        return
    cluster = Cluster.start(bindir)
    try:
        print(f"postgresql {cost(cluster.create_database('claims'), n)}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
