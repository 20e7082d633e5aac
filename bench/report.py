"""Results: collected per round, summarised in ``results/<date>.md`` with a chart
``results/<date>.png`` (req/s as a ratio to eventlet, and KiB per idle connection).

A server's ratio to eventlet is taken within each round (the two measured minutes apart at
most, on the same machine in the same state), and the report gives the median of those
per-round ratios with their interquartile range: a ratio of two medians over a run would
mix a good minute of one server with a bad minute of the other."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from .load import WRK_TIMEOUT, IdleResult, WrkResult
from .servers import REPO, Install

BASELINE: Final = "eventlet"


@dataclasses.dataclass
class Results:
    """Every measurement of one harness run, by load, server and round."""

    servers: list[str]
    loads: list[str] = dataclasses.field(default_factory=list)  # wrk labels, in order
    wrk: dict[tuple[str, str], dict[int, WrkResult]] = dataclasses.field(default_factory=dict)
    idle: dict[str, list[IdleResult]] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    def add_wrk(self, label: str, server: str, round_: int, result: WrkResult) -> None:
        if label not in self.loads:
            self.loads.append(label)
        self.wrk.setdefault((label, server), {})[round_] = result

    def add_idle(self, server: str, result: IdleResult) -> None:
        self.idle.setdefault(server, []).append(result)

    def runs(self, label: str, server: str) -> list[WrkResult]:
        """A server's measurements of a load, in round order."""
        found = self.wrk.get((label, server), {})
        return [found[r] for r in sorted(found)]

    def median_rps(self, label: str, server: str) -> float:
        return _median(r.rps for r in self.runs(label, server))

    def median_cpu_us(self, label: str, server: str) -> float:
        return _median(r.cpu_us for r in self.runs(label, server))

    def round_ratios(self, label: str, server: str) -> list[float]:
        """req/s over eventlet's in the same round, for each round both were measured."""
        mine, base = self.wrk.get((label, server), {}), self.wrk.get((label, BASELINE), {})
        return [mine[r].rps / base[r].rps for r in sorted(mine) if r in base and base[r].rps]

    def ratio(self, label: str, server: str) -> float:
        """The median of the per-round ratios to eventlet."""
        return _median(self.round_ratios(label, server))

    def ratio_quartiles(self, label: str, server: str) -> tuple[float, float]:
        """The per-round ratios' first and third quartiles (their interquartile range)."""
        return quartiles(self.round_ratios(label, server))


def quartiles(values: list[float]) -> tuple[float, float]:
    """First and third quartiles (NaN for no values; the value itself for one)."""
    if len(values) < 2:
        value = values[0] if values else math.nan
        return value, value
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """How the run was made, for the report's header and its commands section."""

    date: str
    duration: float
    rounds: int
    idle_rounds: int
    idle_connections: int
    server_commands: dict[str, str]
    server_notes: dict[str, str]
    wrk_commands: dict[str, str]
    idle_command: str
    started: str
    elapsed_minutes: float
    load_average: tuple[float, float, float]
    server_cpu: int | None
    client_cpu: int | None


def _median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def machine(installs: dict[str, Install]) -> list[str]:
    """Lines describing the machine, the interpreters and the versions under test:
    ``installs`` maps each server's name to what its interpreter holds."""
    peers = [i for i in installs.values() if i.h11_build is None]
    wrk = _first_line(["wrk", "-v"]).split(" Copyright")[0]
    lines = [
        f"Processor: {processor()}; {os.cpu_count()} CPUs",
        f"OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"Python: {platform.python_version()} ({platform.python_implementation()}), "
        f"`{shown_path(sys.executable)}`",
        f"Packages: {_versions({k: v for i in peers for k, v in i.versions.items()})}",
    ]
    for name, install in installs.items():
        if install.h11_build is not None:
            where = (
                "its own virtualenv"
                if install.python != sys.executable
                else "the harness's interpreter"
            )
            lines.append(
                f"{name}: {where}, `{shown_path(install.python)}` (Python "
                f"{install.python_version}): {_versions(install.versions)}; parses with "
                f"{install.h11_build} (checked in every server process); "
                f"request modules {_modules(install)}"
            )
    return [*lines, f"triowsgi source: {_git_revision()}", f"Load generator: {wrk}"]


def _modules(install: Install) -> str:
    return "compiled (hatch_build.py)" if install.compiled else "in plain Python"


def _versions(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v or '(not installed)'}" for k, v in versions.items())


def shown_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (a nox virtualenv);
    anything else (a URL, an option) as it is."""
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, REPO)
    return path if relative.startswith("..") else relative


def lscpu() -> dict[str, str]:
    fields = (line.partition(":") for line in _output(["lscpu"]).splitlines())
    return {name.strip(): value.strip() for name, colon, value in fields if colon}


def cpu_model() -> str:
    """``lscpu``'s model name (a virtual machine may show only the brand: ``AMD EPYC``)."""
    return lscpu().get("Model name") or platform.processor() or "unknown CPU"


# lscpu's fields that tell two processors sold under one model name apart.
IDS: Final = ("CPU family", "Model", "Stepping")


def processor() -> str:
    """The model name, and what tells two processors of one brand apart: the family, model
    and stepping numbers, the clock and the last-level cache."""
    info = lscpu()
    ids = ", ".join(f"{k.split()[-1].lower()} {info[k]}" for k in IDS if k in info)
    details = ["`lscpu` model name", ids, f"{_cpu_mhz():,.0f} MHz"]
    if "L3 cache" in info:
        details.append(f"L3 {info['L3 cache'].split(' (')[0]}")
    return f"{cpu_model()} ({'; '.join(d for d in details if d and d != '0 MHz')})"


def _cpu_mhz() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    return 0.0


def _git_revision() -> str:
    revision = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    if not revision:
        return "not a git checkout"
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--", "triowsgi"])
    return f"git {revision}" + (" with uncommitted changes in triowsgi/" if dirty else "")


def _first_line(argv: list[str]) -> str:
    lines = _output(argv).splitlines()
    return lines[0].strip() if lines else "unknown"


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout or done.stderr


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _ratio_spread(results: Results, label: str, server: str) -> str:
    """The median per-round ratio and its interquartile range: ``1.43x (1.30-1.63)``."""
    ratio = results.ratio(label, server)
    if math.isnan(ratio) or server == BASELINE:
        return _ratio(ratio)
    q1, q3 = results.ratio_quartiles(label, server)
    return f"{ratio:.2f}x ({q1:.2f}-{q3:.2f})"


def _us(value: float) -> str:
    return "-" if math.isnan(value) or value <= 0 else f"{value:.0f}"


def _errors(results: list[WrkResult]) -> str:
    totals = {k: sum(r.errors[k] for r in results) for k in results[0].errors}
    parts = [f"{k} {v}" for k, v in totals.items() if v]
    return f"{sum(totals.values())} ({', '.join(parts)})" if parts else "0"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def throughput_table(results: Results) -> list[str]:
    header = ["scenario", "server", "req/s", "vs eventlet (IQR)", "CPU us/request"]
    header += ["p50 ms", "p99 ms", "errors"]
    rows = [
        _throughput_row(results, label, server)
        for label in results.loads
        for server in results.servers
    ]
    return _table(header, rows)


def _throughput_row(results: Results, label: str, server: str) -> list[str]:
    runs = results.runs(label, server)
    if not runs:
        return [label, server, "failed", "-", "-", "-", "-", "-"]
    rps = f"{results.median_rps(label, server):,.0f}"
    cpu = _us(results.median_cpu_us(label, server))
    p50 = _ms(_median(r.p50_ms for r in runs))
    p99 = _ms(_median(r.p99_ms for r in runs))
    ratio = _ratio_spread(results, label, server)
    return [label, server, rps, ratio, cpu, p50, p99, _errors(runs)]


def memory_table(results: Results) -> list[str]:
    """The server's RSS during the loads that sampled it (medians over the runs)."""
    header = ["scenario", "server", "RSS before MiB", "RSS peak MiB", "growth MiB"]
    rows = []
    for label in results.loads:
        for server in results.servers:
            sampled = [r.rss_kib for r in results.runs(label, server) if r.rss_kib]
            if sampled:
                before = _median(b for b, _ in sampled) / 1024
                peak = _median(p for _, p in sampled) / 1024
                growth = f"{peak - before:.1f}"
                rows.append([label, server, f"{before:.1f}", f"{peak:.1f}", growth])
    return _table(header, rows) if rows else []


def idle_table(results: Results) -> list[str]:
    header = ["server", "held", "RSS before MiB", "RSS after MiB", "KiB per connection"]
    header += ["vs eventlet", "fresh request ms (median / max)"]
    return _table(header, (_idle_row(results, server) for server in results.servers))


def _idle_row(results: Results, server: str) -> list[str]:
    runs = results.idle.get(server)
    if not runs:
        return [server, "failed", "-", "-", "-", "-", "-"]
    kib = _median(r.kib_per_connection for r in runs)
    baseline = _median(r.kib_per_connection for r in results.idle.get(BASELINE, ()))
    fresh = f"{_ms(_median(r.fresh_median_ms for r in runs))} / "
    fresh += _ms(max(r.fresh_max_ms for r in runs))
    failed = sum(r.fresh_errors for r in runs)
    return [
        server,
        f"{min(r.held for r in runs):,} / {runs[0].wanted:,}",  # the worst run
        f"{_median(r.rss_before_kib for r in runs) / 1024:.1f}",
        f"{_median(r.rss_after_kib for r in runs) / 1024:.1f}",
        f"{kib:.1f}",
        _ratio(kib / baseline),
        fresh + (f" ({failed} failed)" if failed else ""),
    ]


def all_runs_table(results: Results) -> list[str]:
    rows = []
    for label in results.loads:
        for server in results.servers:
            for n, r in sorted(results.wrk.get((label, server), {}).items()):
                rps, errors = f"{r.rps:,.0f} req/s, {_us(r.cpu_us)} us CPU", str(r.error_count)
                if r.rss_kib:
                    rps += f", RSS peak {r.rss_kib[1] / 1024:.1f} MiB"
                cells = [str(n + 1), rps, _ms(r.p50_ms), _ms(r.p99_ms), errors]
                rows.append([label, server, *cells])
    for server, idle_runs in results.idle.items():
        for n, i in enumerate(idle_runs, 1):
            # For idle: KiB per connection, and the fresh request's median as its p50.
            kib = f"{i.kib_per_connection:.1f} KiB/connection"
            errors = str(i.wanted - i.held + i.fresh_errors)
            rows.append(["idle", server, str(n), kib, _ms(i.fresh_median_ms), "-", errors])
    header = ["scenario", "server", "round", "result", "p50 ms", "p99 ms", "errors"]
    return _table(header, rows)


def markdown(results: Results, info: RunInfo, installs: dict[str, Install], chart: str) -> str:
    """The whole ``results/<date>.md``."""
    lines = _header(info, installs)
    if results.loads:
        lines += ["## Throughput and latency", "", *throughput_table(results), ""]
        lines += [
            f"`req/s`, `p50`, `p99`: medians over the rounds. {RATIO_NOTE} {CPU_NOTE} "
            "`errors`: the sum over the rounds of socket errors (connect, read, write, and "
            f"timeout: no response within {WRK_TIMEOUT}) and non-2xx/3xx responses (status).",
            "",
        ]
    if memory := memory_table(results):
        lines += ["## Server memory under load", "", *memory, ""]
        lines += [
            "VmRSS of the server's process tree just before wrk starts, and its highest "
            "value read every 0.25 s during the run; medians over the runs.",
            "",
        ]
    if results.idle:
        lines += [f"## Idle keep-alive connections ({info.idle_connections:,})", ""]
        lines += [*idle_table(results), ""]
        lines += [
            "Each connection made one `GET /` and was then held open. RSS: VmRSS of the "
            "server's process tree, medians; `held`: the fewest held in a run; `fresh "
            "request`: connect + `GET /` + whole response on a new connection while the "
            "others are held.",
            "",
        ]
    if chart:
        lines += [f"![req/s relative to eventlet, and KiB per idle connection]({chart})", ""]
    if results.failures:
        lines += ["## Failures", "", *(f"- {f}" for f in results.failures), ""]
    lines += _commands(info)
    lines += ["## Every run", "", *all_runs_table(results), ""]
    return "\n".join(lines)


RATIO_NOTE: Final = (
    "`vs eventlet`: in each round, the server's req/s over eventlet's in that round; the "
    "median of those ratios over the rounds, and in brackets their interquartile range "
    "(first to third quartile)."
)
CPU_NOTE: Final = (
    "`CPU`: the server's process tree's user + system time (`/proc/<pid>/stat`) from "
    "wrk's start to its end, over the requests wrk counted; the median over the rounds. "
    "It depends far less than req/s on what the machine's neighbours do."
)
RATIOS_MOVE: Final = (
    "Ratios to eventlet are from the same run on the processor above. They move from one "
    "processor to another, even between two of the same model name: compare ratios from one "
    "run, not across machines."
)
README_MARKERS: Final = ("<!-- bench-results:start -->", "<!-- bench-results:end -->")


def summary(
    results: Results, info: RunInfo, installs: dict[str, Install], md: Path, chart: Path | None
) -> str:
    """The latest results as ``bench/README.md`` shows them, between its markers; ``md``
    and ``chart`` are the paths of the results file and the chart relative to the README."""
    lines = _header(info, installs, level="###")
    lines += [f"Every run, and the exact commands: [{md.as_posix()}]({md.as_posix()}).", ""]
    if chart is not None:
        lines += [f"![benchmark chart]({chart.as_posix()})", ""]
    if results.loads:
        lines += [*throughput_table(results), ""]
    if memory := memory_table(results):
        lines += [*memory, ""]
    if results.idle:
        lines += [*idle_table(results), ""]
    return "\n".join(lines)


def update_readme(readme: Path, block: str, markers: tuple[str, str] = README_MARKERS) -> None:
    """Replace what lies between the README's markers with ``block``."""
    text = readme.read_text()
    start, end = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    readme.write_text(f"{text[:start]}\n{block}\n{text[end:]}")


# The project README's Performance section: one row per measurement, a column per server.
SUMMARY_MARKERS: Final = ("<!-- bench-summary:start -->", "<!-- bench-summary:end -->")
COLUMN_NAMES: Final = {
    "hypercorn-trio": "hypercorn (Trio worker)",
    "gunicorn-gthread": "gunicorn gthread",
}
# The loads whose CPU time per request gets a row of its own in the project README.
CPU_ROWS: Final = ("flask", "django", "hello-128")
ROW_NAMES: Final = {
    "flask": "Flask JSON route, 128 connections",
    "django": "Django view with a template, 128 connections",
    "stream": "stream, 1 MiB in 64 KiB yields",
    "upload": "upload, 64 KiB POST",
    "blocking": "blocking app (50 ms), 64 connections",
}


def performance(
    results: Results, info: RunInfo, installs: dict[str, Install], md: Path, chart: Path | None
) -> str:
    """The project README's Performance summary, between its markers; ``md`` and ``chart``
    relative to that README."""
    rows = {n: i for n, i in installs.items() if i.h11_build}
    builds = "; ".join(f"`{n}` parses with {i.h11_build}" for n, i in rows.items())
    if rows:
        modules = {_modules(install) for install in rows.values()}
        builds += f"; their request modules {' / '.join(sorted(modules))}"
    if all(i.python != sys.executable for i in rows.values()):
        builds += "; each is installed alone (with Flask and Django) in a virtualenv of its own"
    lines = [
        f"Measured with `nox -s bench` on {info.date}, triowsgi at {_git_revision()}; "
        f"processor: {processor()}, {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}. Each server is one process pinned to one core, "
        "`wrk` runs on the other; keep-alive. Every server is started once; then "
        f"{info.rounds} rounds, each measuring every load on every server for "
        f"{info.duration:g} s, the servers in alternating order. A cell: the median req/s, "
        "and the median over the rounds of the ratio to eventlet.wsgi in the same round, "
        "with its interquartile range in brackets. The triowsgi columns: "
        f"{builds}. Full table, latencies, every round and the exact commands: "
        f"[{md.as_posix()}]({md.as_posix()}); what was profiled and changed: "
        "[bench/NOTES.md](bench/NOTES.md).",
        "",
        f"**{RATIOS_MOVE}**",
        "",
        "To check one line on your machine in about three minutes (every server, "
        f"{info.rounds} rounds; see [bench/README.md](bench/README.md)): `nox -s bench -- "
        "--scenarios flask --tag flask` (or `django`, or `hello --hello-connections 128`), "
        "and compare the ratios with the ranges below.",
        "",
    ]
    header = ["scenario", *(COLUMN_NAMES.get(s, s) for s in results.servers)]
    rows_ = [_performance_row(results, label) for label in results.loads]
    rows_ += [_cpu_row(results, label) for label in CPU_ROWS if label in results.loads]
    if results.idle:
        rows_.append(_idle_performance_row(results, info))
    lines += [*_table(header, rows_), ""]
    if chart is not None:
        alt = "req/s relative to eventlet, and KiB per idle connection"
        lines += [f"![{alt}]({chart.as_posix()})", ""]
    return "\n".join(lines)


def _cpu_row(results: Results, label: str) -> list[str]:
    title = ROW_NAMES.get(label, label.replace("hello-", "hello, ") + " connections")
    title = f"server CPU per request, us: {title.split(',')[0]}"
    if label.startswith("hello-"):
        title += f", {label.removeprefix('hello-')} connections"
    return [title, *(_us(results.median_cpu_us(label, s)) for s in results.servers)]


def _performance_row(results: Results, label: str) -> list[str]:
    hello = [int(x.removeprefix("hello-")) for x in results.loads if x.startswith("hello-")]
    latency: tuple[str, Callable[[WrkResult], float]] | None = None
    title = ROW_NAMES.get(label, label)
    if label.startswith("hello-"):
        n = int(label.removeprefix("hello-"))
        title = f"hello, {n} connection{'s' if n > 1 else ''}"
        if n == 1:
            latency = ("p50", lambda r: r.p50_ms)
        elif n == max(hello):
            latency = ("p99", lambda r: r.p99_ms)
    if latency:
        title += f" (req/s, {latency[0]})"
    return [title, *(_performance_cell(results, label, s, latency) for s in results.servers)]


def _performance_cell(
    results: Results,
    label: str,
    server: str,
    latency: tuple[str, Callable[[WrkResult], float]] | None,
) -> str:
    runs = results.runs(label, server)
    if not runs:
        return "failed"
    cell = f"{results.median_rps(label, server):,.0f}"
    if server != BASELINE:
        cell += f", {_ratio_spread(results, label, server)}"
    if latency:
        cell += f", {_ms(_median(map(latency[1], runs)))} ms"
    errors = sum(r.error_count for r in runs)
    return cell + (f", {errors:,} errors" if errors else "")


def _idle_performance_row(results: Results, info: RunInfo) -> list[str]:
    cells = []
    for server in results.servers:
        runs = results.idle.get(server)
        if not runs:
            cells.append("failed")
            continue
        held = min(r.held for r in runs)
        cell = f"{_median(r.kib_per_connection for r in runs):.1f}"
        cells.append(cell + (f" ({held:,} held)" if held < runs[0].wanted else ""))
    title = f"KiB per idle keep-alive connection ({info.idle_connections:,} held)"
    return [title, *cells]


def _header(info: RunInfo, installs: dict[str, Install], level: str = "#") -> list[str]:
    pinning = (
        f"server pinned to CPU {info.server_cpu}, load generator to CPU {info.client_cpu}"
        if info.server_cpu is not None
        else "no CPU pinning (fewer than 2 CPUs)"
    )
    load = ", ".join(f"{x:.2f}" for x in info.load_average)
    return [
        f"{level} triowsgi benchmark, {info.date}",
        "",
        f"Every server started once, then {info.rounds} interleaved round(s), each measuring "
        f"every load on every server for {info.duration:g} s (servers in alternating order); "
        f"idle: {info.idle_rounds} probe(s) per server, each on a fresh process; "
        f"{pinning}; keep-alive connections over loopback. Started {info.started}, took "
        f"{info.elapsed_minutes:.1f} min; load average at the start: {load}.",
        "",
        *(f"- {line}" for line in machine(installs)),
        "",
        RATIOS_MOVE,
        "",
    ]


def _commands(info: RunInfo) -> list[str]:
    lines = ["## Commands", "", "`{port}` is a free port picked for each measurement.", ""]
    lines += [
        "Servers (each started once for the wrk loads, with the blocking scenario's thread "
        "count where it differs; a fresh process for each idle probe):",
        "",
    ]
    for name, command in info.server_commands.items():
        lines += [f"- **{name}**: {info.server_notes[name]}", "", f"  `{command}`", ""]
    lines += ["Load:", ""]
    lines += [f"- {label}: `{command}`" for label, command in info.wrk_commands.items()]
    if info.idle_command:
        lines.append(f"- idle: {info.idle_command}")
    return [*lines, ""]


def chart(results: Results, path: Path, title: str) -> bool:
    """Draw the PNG; False if there is nothing to draw or matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return False
    panels: list[tuple[Callable[[Results, Any], None], int]] = []
    if results.loads and BASELINE in results.servers:
        panels.append((_ratio_panel, len(results.loads) * len(results.servers)))
    if results.idle:
        panels.append((_idle_panel, 2 * len(results.servers)))
    if not panels:
        return False
    widths = [width for _, width in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3 + 0.3 * sum(widths), 5), width_ratios=widths, squeeze=False
    )
    for (panel, _), ax in zip(panels, axes[0], strict=True):
        panel(results, ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _ratio_panel(results: Results, ax: Any) -> None:
    n = len(results.servers)
    width = 0.8 / n
    for i, server in enumerate(results.servers):
        xs = [x + (i - (n - 1) / 2) * width for x in range(len(results.loads))]
        ys = [results.ratio(label, server) for label in results.loads]
        ys = [0 if math.isnan(y) else y for y in ys]
        spread = [results.ratio_quartiles(label, server) for label in results.loads]
        pairs = list(zip(ys, spread, strict=True))
        below = [0 if math.isnan(q1) else max(y - q1, 0) for y, (q1, _) in pairs]
        above = [0 if math.isnan(q3) else max(q3 - y, 0) for y, (_, q3) in pairs]
        errors = [below, above]
        ax.bar(xs, ys, width, label=server, color=f"C{i}", yerr=errors, capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(results.loads)), results.loads, rotation=30, ha="right")
    ax.set_ylabel("req/s relative to eventlet (higher is better)")
    ax.legend(fontsize=8)


def _idle_panel(results: Results, ax: Any) -> None:
    servers = [s for s in results.servers if s in results.idle]
    kib = [_median(r.kib_per_connection for r in results.idle[s]) for s in servers]
    colors = [f"C{results.servers.index(s)}" for s in servers]
    ax.bar(range(len(servers)), kib, color=colors)
    ax.set_ylabel("KiB per idle connection (lower is better)")
    ax.set_xticks(range(len(servers)), servers, rotation=30, ha="right")
