"""``python -m bench.pool RESULTS.md...``: the ratios to eventlet over several harness runs.

One run's interquartile range says how its rounds spread within its twenty minutes; on
this kind of machine the next hour can sit outside it (bench/NOTES.md has runs of the same
code an hour apart differing by more than their ranges). This pools the rounds of several
``results/*.md`` files: each round's ratio is still taken within its own round (server
and eventlet measured seconds apart), then the median and interquartile range are taken
over every round of every run, next to each run's own median. Pool runs of one server
revision (each file's is printed with it) to say what a user measuring at some other
hour should expect.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .report import BASELINE, quartiles

# A row of a results file's "Every run" table: scenario, server, round, "N req/s, M us CPU".
_ROUND_ROW: Final = re.compile(
    r"^\| (?P<load>[^|]+) \| (?P<server>[^|]+) \| (?P<round>\d+) \| "
    r"(?P<rps>[\d,.]+) req/s, (?P<cpu>[\d,.]+) us CPU \|"
)
_REVISION: Final = re.compile(r"^- triowsgi source: git (\S+)", re.MULTILINE)
_STARTED: Final = re.compile(r"Started (\d{4}-\d\d-\d\d \d\d:\d\d)")


@dataclasses.dataclass
class Run:
    """One results file: its rounds' req/s and CPU per request, by load and server."""

    path: Path
    revision: str
    started: str
    rps: dict[tuple[str, str], dict[int, float]]
    cpu: dict[tuple[str, str], dict[int, float]]

    def ratios(self, load: str, server: str) -> list[float]:
        """req/s over eventlet's in the same round, for every round both were measured."""
        mine, base = self.rps.get((load, server), {}), self.rps.get((load, BASELINE), {})
        return [mine[r] / base[r] for r in sorted(mine) if base.get(r)]


def read_run(path: Path) -> Run:
    """Parse a ``results/*.md`` file written by ``python -m bench``."""
    text = path.read_text()
    revision = _REVISION.search(text)
    started = _STARTED.search(text)
    run = Run(path, revision[1] if revision else "?", started[1] if started else "?", {}, {})
    for line in text.splitlines():
        row = _ROUND_ROW.match(line)
        if row is None:
            continue
        key = (row["load"].strip(), row["server"].strip())
        round_ = int(row["round"])
        run.rps.setdefault(key, {})[round_] = float(row["rps"].replace(",", ""))
        run.cpu.setdefault(key, {})[round_] = float(row["cpu"].replace(",", ""))
    if not run.rps:
        raise ValueError(f"{path}: no 'Every run' rows (is it a results file of bench?)")
    return run


def pooled_table(runs: Sequence[Run], loads: Sequence[str] | None = None) -> list[str]:
    """Markdown rows: per load and server, the pooled median ratio (IQR), the range of
    the runs' own medians, the rounds pooled and the median CPU per request."""
    lines = [
        "| load | server | rounds (runs) | vs eventlet, pooled (IQR) | each run's median "
        "| CPU us/request, pooled |",
        "|---|---|---|---|---|---|",
    ]
    keys: dict[tuple[str, str], None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.rps))
    for load, server in keys:
        if loads and load not in loads:
            continue
        per_run = [run.ratios(load, server) for run in runs if (load, server) in run.rps]
        pooled = [ratio for ratios in per_run for ratio in ratios]
        cpu = [c for run in runs for c in run.cpu.get((load, server), {}).values()]
        if not pooled:
            continue
        q1, q3 = quartiles(pooled)
        medians = ", ".join(f"{statistics.median(r):.2f}x" for r in per_run if r)
        lines.append(
            f"| {load} | {server} | {len(pooled)} ({len(per_run)}) | "
            f"{statistics.median(pooled):.2f}x ({q1:.2f}-{q3:.2f}) | {medians} | "
            f"{statistics.median(cpu):.0f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__)
    p.add_argument("results", type=Path, nargs="+", help="results/*.md files of bench runs")
    p.add_argument("--loads", help="comma-separated load labels to show (default: all)")
    args = p.parse_args(argv)
    try:
        runs = [read_run(path) for path in args.results]
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    for run in runs:
        print(f"- {run.path}: git {run.revision}, started {run.started}")
    revisions = {run.revision for run in runs}
    if len(revisions) > 1:
        print(f"  (note: {len(revisions)} revisions pooled: {', '.join(sorted(revisions))})")
    print()
    print("\n".join(pooled_table(runs, args.loads.split(",") if args.loads else None)))


if __name__ == "__main__":
    main()
