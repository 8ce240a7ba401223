"""Scenario `ledger`: 1,000 concurrent reservations on SQLite → reservations per second, and the overspend (0)."""

from __future__ import annotations

import statistics

from bench.common import Figure, run_child
from bench.report import Context, Section

NAME = "ledger"
TITLE = "Ledger contention"


def run(ctx: Context) -> Section:
    total = 200 if ctx.quick else 1000
    section = Section(NAME, TITLE, (
        f"{total:,} reservations of $0.42 fired at once at one member's account, which holds enough for exactly half "
        "of them, through `Ledger.reserve` (a `BEGIN IMMEDIATE` transaction each: read the balance, write the hold). "
        f"Two ways: all {total:,} as coroutines on the one shared aiosqlite connection, as `reelbot run` and `reelbot "
        f"worker` do; and split over 4 processes with a connection each. Rate = attempts (accepted or refused) per "
        "second of wall time. Overspend = money accepted beyond the funds; `ledger verify` must be clean. The physical "
        "limit is SQLite's bare write-transaction rate on the same disk with reelbot's settings (WAL, "
        "synchronous=NORMAL): `BEGIN IMMEDIATE; INSERT one row; COMMIT` in a loop."
    ))  # fmt: skip
    one = Figure(NAME, f"reservations/s, {total:,} coroutines on 1 connection", "/s", digits=0)
    four = Figure(NAME, f"reservations/s, 4 processes × {total // 4:,}", "/s", digits=0)
    overspend = Figure(NAME, "overspend (all runs, both ways)", "$", digits=2, goal="0 (must)", limit="0")
    bare: list[float] = []
    rows = [
        "| run | way | attempts | accepted (funds for) | seconds | rate /s | overspend | verify |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for run_no in range(1, ctx.runs + 1):
        for processes, figure in ((1, one), (4, four)):
            ctx.say(f"  ledger run {run_no}/{ctx.runs}, {processes} process(es)")
            result = run_child("bench.ledger_run", {"reservations": total, "processes": processes}, logs=ctx.logs)
            rate = result["reservations"] / result["seconds"]
            figure.runs.append(rate)
            overspend.runs.append(result["overspend_micros"] / 1e6)
            bare.append(result["sqlite_commits_per_s"])
            if not result["verify_clean"] or result["available_micros"] < 0:
                overspend.runs.append(float("inf"))
            verdict = "clean" if result["verify_clean"] else "MISMATCH"
            rows.append(f"| {run_no} | {processes} process(es) | {result['reservations']} | {result['accepted']} "
                        f"({result['covered']}) | {result['seconds']:.3f} | {rate:,.0f} | "
                        f"${result['overspend_micros'] / 1e6:.2f} | {verdict} |")  # fmt: skip
    limit = f"{statistics.median(bare):,.0f} bare commits/s"
    for figure in (one, four):
        figure.limit = limit
        figure.goal = "—"
    overspend.met = max(overspend.runs) == 0
    section.figures = [one, four, overspend]
    section.details = [*rows, ""]
    return section
