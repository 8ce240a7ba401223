"""`python -m bench [--quick] [--only NAME,...] [--runs N] [--out PATH]`: run the scenarios, write the report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import ack, jobs, ledger, peers, stream
from bench.common import ROOT
from bench.report import Context, Section, render

SCENARIOS = {module.NAME: module for module in (ack, jobs, peers, ledger, stream)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per figure, smaller sizes (about 2 minutes)")
    parser.add_argument("--only", help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, --quick 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md", help="where to write the report")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose among {', '.join(SCENARIOS)}")
    runs = args.runs or (1 if args.quick else 3)
    started = time.time()
    logs = Path(tempfile.mkdtemp(prefix="reelbot-bench-logs-"))
    ctx = Context(quick=args.quick, runs=runs, logs=logs)
    ctx.say(f"reelbot bench: {', '.join(names)}; {runs} run(s) each; logs in {logs}")
    sections: list[Section] = []
    failed = False
    for name in names:
        module = SCENARIOS[name]
        ctx.say(f"{module.TITLE} …")
        begun, load = time.time(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        try:
            section = module.run(ctx)
        except Exception:
            failed = True
            section = Section(name, module.TITLE, "", error=traceback.format_exc())
            ctx.say(section.error or "")
        section.seconds, section.load = time.time() - begun, load
        sections.append(section)
        for figure in section.figures:
            verdict = "" if figure.met is None else (" ✓" if figure.met else " ✗ goal " + figure.goal)
            ctx.say(f"  {figure.name}: {figure.fmt(figure.median)} {figure.unit}{verdict}")
    command = "python -m bench" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
                                          if not a.startswith("--out") and a != str(args.out))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(sections, command=command, quick=args.quick, runs=runs, started=started))
    ctx.say(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
