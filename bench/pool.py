"""``python -m bench.pool RESULTS.md...``: the ratios to eventlet over several harness runs.

One run's interquartile range covers only that run; on this kind of machine the next run
of the same code can fall outside it (bench/NOTES.md has runs minutes and hours apart that
differ by more than their ranges). This pools the rounds of several ``results/*.md``
files: each round's ratio is still taken within its own round (server and eventlet
measured seconds apart), then the median and interquartile range are taken over every
round of every run, next to each run's own median. Pool runs of one server code (each
file's revision is printed with it) to say what a user measuring at another time should
expect; a run with more rounds weighs more.
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

# A row of a results file's "Every run" table: scenario, server, round, then "N req/s, M us
# CPU" (M is "-" when the CPU was not measured; the file scenario adds the RSS peak).
_ROUND_ROW: Final = re.compile(
    r"^\| (?P<load>[^|]+) \| (?P<server>[^|]+) \| (?P<round>\d+) \| "
    r"(?P<rps>[\d,.]+) req/s, (?P<cpu>[\d,.]+|-) us CPU[^|]*\|"
)
# "git <rev>", and " with uncommitted changes in triowsgi/" when the run measured some.
_REVISION: Final = re.compile(r"^- triowsgi source: (.+)$", re.MULTILINE)
_STARTED: Final = re.compile(r"Started (\d{4}-\d\d-\d\d \d\d:\d\d)")


@dataclasses.dataclass
class Run:
    """One results file: its rounds' req/s and CPU per request, by load and server."""

    path: Path
    revision: str
    started: str
    rps: dict[tuple[str, str], dict[int, float]] = dataclasses.field(default_factory=dict)
    cpu: dict[tuple[str, str], dict[int, float | None]] = dataclasses.field(default_factory=dict)

    def paired_rounds(self, load: str, server: str) -> list[int]:
        """The rounds in which both the server and eventlet were measured."""
        mine, base = self.rps.get((load, server), {}), self.rps.get((load, BASELINE), {})
        return [r for r in sorted(mine) if base.get(r)]

    def ratios(self, load: str, server: str) -> list[float]:
        """req/s over eventlet's in the same round, for every paired round."""
        return [
            self.rps[(load, server)][r] / self.rps[(load, BASELINE)][r]
            for r in self.paired_rounds(load, server)
        ]


def read_run(path: Path) -> Run:
    """Parse a ``results/*.md`` file written by ``python -m bench``."""
    text = path.read_text()
    revision = _REVISION.search(text)
    started = _STARTED.search(text)
    run = Run(path, revision[1].strip() if revision else "?", started[1] if started else "?")
    for line in text.splitlines():
        row = _ROUND_ROW.match(line)
        if row is None:
            continue
        key = (row["load"].strip(), row["server"].strip())
        round_ = int(row["round"])
        run.rps.setdefault(key, {})[round_] = float(row["rps"].replace(",", ""))
        cpu = row["cpu"]
        run.cpu.setdefault(key, {})[round_] = None if cpu == "-" else float(cpu.replace(",", ""))
    if not run.rps:
        raise ValueError(f"{path}: no 'Every run' rows (is it a results file of bench?)")
    return run


def pooled_table(runs: Sequence[Run], loads: Sequence[str] | None = None) -> list[str]:
    """Markdown rows: per load and server, the rounds pooled (and the runs they came
    from), the pooled median ratio to eventlet with its interquartile range, each run's
    own median in the order of ``runs`` ("-" for a run without the pair), and the median
    CPU per request over the same rounds."""
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
        per_run = [run.ratios(load, server) for run in runs]
        pooled = [ratio for ratios in per_run for ratio in ratios]
        if not pooled:
            continue
        cpu = [
            value
            for run in runs
            for r in run.paired_rounds(load, server)
            if (value := run.cpu[(load, server)][r]) is not None
        ]
        medians = ", ".join(f"{statistics.median(r):.2f}x" if r else "-" for r in per_run)
        ratio = f"{statistics.median(pooled):.2f}x"
        if server != BASELINE:
            q1, q3 = quartiles(pooled)
            ratio += f" ({q1:.2f}-{q3:.2f})"
        counted = f"{len(pooled)} ({sum(1 for r in per_run if r)})"
        cpu_cell = f"{statistics.median(cpu):.0f}" if cpu else "-"
        lines.append(f"| {load} | {server} | {counted} | {ratio} | {medians} | {cpu_cell} |")
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
    found = {load for run in runs for load, _ in run.rps}
    wanted = args.loads.split(",") if args.loads else None
    if wanted and (missing := [load for load in wanted if load not in found]):
        p.error(f"no results for load(s) {missing}; the files have {sorted(found)}")
    for run in runs:
        print(f"- {run.path}: {run.revision}, started {run.started}")
    revisions = {run.revision for run in runs}
    if len(revisions) > 1:
        print(f"  (note: {len(revisions)} revisions pooled: {', '.join(sorted(revisions))})")
    print()
    print("\n".join(pooled_table(runs, wanted)))


if __name__ == "__main__":
    main()
