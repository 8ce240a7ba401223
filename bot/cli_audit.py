"""`reelbot audit …`: a server's ledger entries and admin actions, listed or exported as CSV.

Kept apart from `bot.cli`, which only wires it in; the rows come from `bot.store.audit`, as `/audit` does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from bot.money import usd_str
from bot.services import open_app
from bot.settings import Settings
from bot.store.audit import AuditRow, audit_page, audit_rows

EXIT_OK, EXIT_INVALID = 0, 2
CSV_COLUMNS = (
    "at", "source", "id", "kind", "actor", "target", "amount_usd", "held_usd", "bucket", "counterparty",
    "reason", "job_id", "detail",
)  # fmt: skip


def add_commands(commands: Any) -> None:
    """Add `audit` to the `reelbot` command's subparsers."""
    audit = commands.add_parser("audit", help="a server's ledger entries and admin actions")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    export = actions.add_parser("export", help="write the server's whole audit as CSV, oldest first")
    _filters(export)
    export.add_argument("--out", type=Path, metavar="FILE", help="where to write it (default: standard output)")

    listing = actions.add_parser("list", help="one page of the server's audit, newest first")
    _filters(listing)
    listing.add_argument("--limit", type=_limit, default=20, help="rows per page (1–500)")
    listing.add_argument("--before", metavar="CURSOR", help="the cursor a previous page printed, for the next page")
    listing.add_argument("--json", action="store_true")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guild", required=True, help='the server id ("" for the command line\'s own)')
    parser.add_argument("--member", help="only rows this member made or that concern them")
    parser.add_argument("--kind", help="only one kind, e.g. capture, grant, quota_approve, job_deny")


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 500")
    return int(text)


def _usd(micros: int | None) -> str:
    return "" if micros is None else usd_str(micros)


def csv_record(row: AuditRow) -> dict[str, str]:
    """One CSV line: money as decimal dollar strings ("0.252", "-1.00"), nothing as an empty field."""
    return {
        "at": row.at,
        "source": row.source,
        "id": str(row.id),
        "kind": row.kind,
        "actor": row.actor,
        "target": row.target or "",
        "amount_usd": _usd(row.amount_micros),
        "held_usd": _usd(row.held_micros),
        "bucket": row.bucket or "",
        "counterparty": row.counterparty or "",
        "reason": row.reason,
        "job_id": row.job_id or "",
        "detail": json.dumps(row.detail, sort_keys=True) if row.detail else "",
    }


async def write_csv(db: Any, guild_id: str, out: IO[str], *, member: str | None = None,
                    kind: str | None = None) -> int:  # fmt: skip
    """Write the header and every row; returns how many rows."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    count = 0
    async for row in audit_rows(db, guild_id, member=member, kind=kind):
        writer.writerow(csv_record(row))
        count += 1
    return count


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    async with open_app(settings) as app:
        if args.audit_command == "export":
            if args.out is None:
                count = await write_csv(app.db, args.guild, sys.stdout, member=args.member, kind=args.kind)
            else:
                count = await _export_file(app.db, args, args.out)
                print(f"wrote {count} rows to {args.out}", file=sys.stderr)
            return EXIT_OK
        try:
            page = await audit_page(app.db, args.guild, member=args.member, kind=args.kind, before_id=args.before,
                                    limit=args.limit)  # fmt: skip
        except ValueError as exc:  # a mangled --before cursor
            print(f"reelbot: {exc}", file=sys.stderr)
            return EXIT_INVALID
    if args.json:
        print(json.dumps({"rows": [csv_record(row) for row in page.rows], "next_cursor": page.next_cursor}))
        return EXIT_OK
    for row in page.rows:
        amount = row.amount_micros if row.amount_micros else row.held_micros
        money = f"{usd_str(amount):>10}" if amount else " " * 10
        job = f" job {row.job_id}" if row.job_id else ""
        print(
            f"{row.at}  {row.source:<6} {row.kind:<20} {money}  {row.actor} -> {row.target or '-'}{job}: {row.reason}"
        )
    if page.next_cursor:
        print(f"more: --before '{page.next_cursor}'")
    return EXIT_OK


async def _export_file(db: Any, args: argparse.Namespace, out: Path) -> int:
    """Written beside the target and renamed into place, so a failed export never leaves half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            count = await write_csv(db, args.guild, handle, member=args.member, kind=args.kind)
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return count
