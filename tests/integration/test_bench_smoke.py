"""The benchmark harness still runs: `python -m bench --quick --only ledger` writes its Markdown report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_ledger_bench_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "WAVESPEED_", "FAL_"))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "ledger", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < 20, f"the quick ledger bench took {elapsed:.1f} s"
    report = out.read_text()
    assert report.startswith("# reelbot benchmarks")
    for heading in ("## Machine and versions", "## How to read this", "## Summary", "## Ledger contention"):
        assert heading in report
    for fact in ("| CPU |", "| cores |", "| RAM |", "| OS |", "| Python |", "| discord.py |", "| httpx |",
                 "| aiosqlite |", "| reelbot commit |"):  # fmt: skip
        assert fact in report
    assert "python -m bench --quick --only ledger" in report
    rate = re.search(
        r"\| Ledger contention \| reservations/s, 200 coroutines on 1 connection \| ([\d,]+) /s \|", report
    )
    assert rate and int(rate.group(1).replace(",", "")) > 0, report
    assert re.search(r"\| Ledger contention \| overspend[^|]*\| 0\.00 \$ \|.*\| yes \|", report), report
    assert "bare commits/s" in report  # the physical limit beside the figure
