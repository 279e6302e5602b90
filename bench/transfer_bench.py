"""`alertd import` and `alertd export` of many subscribers: wall time and peak memory.

Runs the installed command in subprocesses on a fresh SQLite database, as an operator would:
an import of N subscribers with two alerts each (one confirmed), the same import again (every
alert already there), and an export. Prints a Markdown table for bench/RESULTS.md.

    .venv/bin/python bench/transfer_bench.py [--subscribers 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _alertd() -> str:
    found = shutil.which("alertd", path=str(Path(sys.executable).parent))
    assert found is not None, "install alertd in this interpreter's environment first"
    return found


def _run(config: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, the command's own peak RSS in MiB (from wait4), and what it said."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [_alertd(), "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    said = process.stdout.read().strip()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    assert process.returncode == 0, said
    return elapsed, usage.ru_maxrss / 1024, said.splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "alertd.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{work}/alertd.db"\n')
        source = work / "in.jsonl"
        with source.open("w") as out:
            for n in range(args.subscribers):
                line = {
                    "email": f"reader{n}@example.org",
                    "alerts": [
                        {"query": "nhs dentists", "confirmed_at": "2026-01-01T09:00:00+00:00"},
                        {"query": "member:4138", "frequency": "weekly"},
                    ],
                }
                out.write(json.dumps(line) + "\n")
        subprocess.run(
            [_alertd(), "--config", str(config), "db", "upgrade"], check=True, capture_output=True
        )
        rows = [
            ("import", *_run(config, "import", str(source))),
            ("import again", *_run(config, "import", str(source))),
            ("export", *_run(config, "export", "--out", str(work / "out.jsonl"))),
        ]
    alerts = 2 * args.subscribers
    print(f"{args.subscribers:,} subscribers, {alerts:,} alerts, SQLite\n")
    print("| command | wall s | alerts/s | peak RSS MiB | said |")
    print("|---|---|---|---|---|")
    for name, elapsed, peak, said in rows:
        print(f"| {name} | {elapsed:.1f} | {alerts / elapsed:,.0f} | {peak:.0f} | {said} |")


if __name__ == "__main__":
    main()
