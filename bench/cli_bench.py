"""How long the installed `alertd` command takes to start and answer: --help, list,
subscribe, preview (wall time of whole processes, median of N), and what it imports.

Run: .venv/bin/python bench/cli_bench.py [--runs 5]

It makes a SQLite database in a temporary folder (brought to the newest migration, 200
alerts, the 469 recorded answers of 1 Feb 2021 for `preview`), runs each command once to
warm the page cache, then --runs times, and prints a Markdown section for bench/RESULTS.md:
the medians beside the targets and bare `python -c pass`, and -X importtime's largest
top-level imports of each command.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALERTD = Path(sys.executable).with_name("alertd")
TARGETS_S = {"--help": 0.150, "list": 0.300}


def _commands() -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "list": ["list"],
        # A new address each run ({run}): the same alert twice is refused. --confirmed: the
        # quick path (an unconfirmed one also builds and queues its confirmation mail).
        "subscribe": [
            "subscribe",
            "bench{run}@example.org",
            '"special educational needs"',
            "--confirmed",
        ],
        "preview": ["preview", "school funding", "--days", "3650"],
    }


def _prepare(folder: Path) -> dict[str, str]:
    """A database at the newest migration with 200 alerts and the recorded answers."""
    sys.path.insert(0, str(ROOT / "tests"))
    from alertd.config import DatabaseSettings
    from alertd.db import open_database
    from alertd.items import add_items
    from alertd.kinds import written_question
    from alertd.subscriptions import lifecycle

    from standin_api import load_2021_answered

    url = f"sqlite:///{folder}/alertd.db"
    engine = open_database(DatabaseSettings(url=url))
    now = datetime.now(UTC)
    stored_at = now - timedelta(days=1)
    add_items(
        engine,
        written_question.SOURCE,
        [written_question.parse(record) for record in load_2021_answered()],
        now=stored_at,
        today=stored_at.date(),
        never_alert=True,
    )
    for n in range(200):
        lifecycle.subscribe(
            engine, f"reader{n}@example.org", f"topic{n} funding", "daily", confirmed=True, now=now
        )
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    env["ALERTD_DATABASE__URL"] = url
    return env


def _wall_s(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, cwd=env["BENCH_CWD"], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The CPU the command used (user + system): on a shared machine, unlike wall time, it
    # does not count the time spent waiting for a core.
    _CPU_S.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return time.perf_counter() - started


_CPU_S: list[float] = []


def _cpu_median_s(runs: int) -> float:
    """The median CPU seconds of the last `runs` commands timed."""
    return statistics.median(_CPU_S[-runs:])


def _top_imports(args: list[str], env: dict[str, str], count: int = 8) -> list[tuple[str, float]]:
    """The largest top-level imports (cumulative ms) of one run under -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ALERTD), *args],
        env=env,
        cwd=env["BENCH_CWD"],
        check=True,
        capture_output=True,
        text=True,
    )
    top: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith("  "):  # nested: counted in its parent's cumulative time
            continue
        top.append((name.strip(), int(cumulative) / 1000))
    return sorted(top, key=lambda entry: -entry[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        env = _prepare(Path(folder))
        env["BENCH_CWD"] = folder
        medians: dict[str, float] = {}
        spread: dict[str, tuple[float, float]] = {}
        cpu: dict[str, float] = {}
        baseline = [sys.executable, "-c", "pass"]
        _wall_s(baseline, env)
        times = [_wall_s(baseline, env) for _ in range(runs)]
        cpu["python -c pass"] = _cpu_median_s(runs)
        medians["python -c pass"] = statistics.median(times)
        spread["python -c pass"] = (min(times), max(times))
        for name, args in _commands().items():

            def argv(run: int, args: list[str] = args) -> list[str]:
                return [str(ALERTD), *(arg.replace("{run}", str(run)) for arg in args)]

            _wall_s(argv(0), env)  # warm the page cache
            times = [_wall_s(argv(run), env) for run in range(1, runs + 1)]
            cpu[name] = _cpu_median_s(runs)
            medians[name] = statistics.median(times)
            spread[name] = (min(times), max(times))
        imports = {
            name: _top_imports([arg.replace("{run}", "x") for arg in args], env)
            for name, args in _commands().items()
        }
    load = os.getloadavg()[0]

    print("## Command line start-up\n")
    print(
        f"Command: `.venv/bin/python bench/cli_bench.py --runs {runs}` "
        f"(took {time.perf_counter() - started:.0f} s; load average at the end {load:.1f} "
        f"on {os.cpu_count()} cores). Wall time of the installed `alertd` in a subprocess, "
        f"median of {runs} after one warm-up run; SQLite at the newest migration, 200 alerts, "
        "469 stored answers.\n"
    )
    base = medians["python -c pass"]
    print("| command | median | min – max | × `python -c pass` | CPU (median) | target |")
    print("|---|---|---|---|---|---|")
    for name, median in medians.items():
        low, high = spread[name]
        target = TARGETS_S.get(name)
        verdict = ""
        if target is not None:
            verdict = f"≤ {target * 1000:.0f} ms: {'MET' if median <= target else 'MISSED'}"
        shown = f"`alertd {name}`" if name != "python -c pass" else "`python -c pass`"
        print(
            f"| {shown} | {median * 1000:.0f} ms | {low * 1000:.0f} – {high * 1000:.0f} ms "
            f"| {median / base:.1f}× | {cpu[name] * 1000:.0f} ms | {verdict} |"
        )
    print("\nLargest top-level imports (`-X importtime`, cumulative ms, one run):\n")
    for name, top in imports.items():
        listed = ", ".join(f"{module} {ms:.0f}" for module, ms in top)
        print(f"- `alertd {name}`: {listed}")


if __name__ == "__main__":
    main()
