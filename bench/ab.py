"""``python -m bench.ab OTHER``: an interleaved A/B of triowsgi between two source trees.

A is ``OTHER`` (a checkout of another revision, e.g. ``git worktree add /tmp/base HEAD~1``),
B is this repository's working tree; both run with the same interpreter, pinned to one
CPU, with ``wrk`` on the other, in alternating order, ``--runs`` times. It prints each
load's median req/s for A and B and their ratio: the measure bench/NOTES.md asks of every
change (6 runs; keep only what moves the median).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from .__main__ import loads, pick_cpus, raise_fd_limit
from .load import Load, WrkResult, run_wrk
from .servers import REPO, SERVERS, Settings, running

LOADS = "hello-1,hello-128,hello-512,upload,blocking"


def named_loads(labels: Sequence[str]) -> list[Load]:
    """The :func:`bench.__main__.loads` measurements named by label (``hello-<n>``, or a
    scenario's own)."""
    known: dict[str, Load] = {}
    for label in labels:
        scenario, _, connections = label.partition("-")
        found = loads(scenario, [int(connections)] if connections.isdigit() else [])
        known.update((load.label, load) for load in found)
    missing = [label for label in labels if label not in known]
    if missing:
        raise SystemExit(f"unknown load(s) {missing}; e.g. {LOADS}")
    return [known[label] for label in labels]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("other", type=Path, help="source tree of A (another revision's checkout)")
    p.add_argument("--loads", default=LOADS, help=f"comma-separated ({LOADS})")
    p.add_argument("--runs", type=int, default=6, help="interleaved repetitions (6)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter of both (default: this one)"
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args(argv)
    if not (args.other / "triowsgi" / "__init__.py").exists():
        p.error(f"{args.other} holds no triowsgi package")
    raise_fd_limit(4096)
    server_cpu, client_cpu = pick_cpus(args.server_cpu, args.client_cpu)
    # Absolute, not resolved: the servers start in A's and B's trees, and a virtualenv's
    # python is a symlink that would leave the virtualenv.
    python = os.path.abspath(args.python)
    base = dataclasses.replace(SERVERS[1], h11_build=None, python=python)
    sides = {"A": dataclasses.replace(base, source=args.other.resolve()), "B": base}
    settings = Settings(threads=4, max_connections=6000)
    results: dict[tuple[str, str], list[WrkResult]] = {}
    for run in range(args.runs):
        order = ["A", "B"] if run % 2 == 0 else ["B", "A"]
        for load in named_loads(args.loads.split(",")):
            for side in order:
                with running(sides[side], settings, server_cpu) as handle:
                    result = run_wrk(load, handle, args.duration, client_cpu)
                results.setdefault((load.label, side), []).append(result)
                print(
                    f"run {run + 1} {load.label} {side}: {result.rps:,.0f} req/s, "
                    f"p50 {result.p50_ms:.3g} ms, errors {result.error_count}",
                    flush=True,
                )
    print(f"\nA: {sides['A'].source}\nB: {REPO}\n")
    print("| load | A req/s | B req/s | B/A | A p50 ms | B p50 ms |\n|---|---|---|---|---|---|")
    for label in args.loads.split(","):
        a, b = results[(label, "A")], results[(label, "B")]
        a_rps = statistics.median(r.rps for r in a)
        b_rps = statistics.median(r.rps for r in b)
        print(
            f"| {label} | {a_rps:,.0f} | {b_rps:,.0f} | {b_rps / a_rps:.3f}x | "
            f"{statistics.median(r.p50_ms for r in a):.3g} | "
            f"{statistics.median(r.p50_ms for r in b):.3g} |"
        )


if __name__ == "__main__":
    main()
