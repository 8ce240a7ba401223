"""`reelbot quota …` and `reelbot ledger …`: grant quota, set allowances, show an account, verify the books.

Kept apart from `bot.cli` so that module only wires these commands in; they run on the same core as the bot.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.ledger import CLI_GUILD, CLI_USER, Balance, Ledger, Period, iso
from bot.money import Micros, fmt_usd, usd, usd_str
from bot.services import open_app
from bot.settings import Settings

EXIT_OK, EXIT_MISMATCH = 0, 1


def _dollars(text: str) -> Micros:
    try:
        micros = usd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if micros < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return micros


def _positive_dollars(text: str) -> Micros:
    micros = _dollars(text)
    if micros == 0:
        raise argparse.ArgumentTypeError("the amount must be more than $0")
    return micros


def add_commands(commands: Any) -> None:
    """Add `quota` and `ledger` to the `reelbot` command's subparsers."""
    quota = commands.add_parser("quota", help="grant quota, set allowances, show an account")
    actions = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")

    grant = actions.add_parser("grant", help="add extra quota to a member (it does not expire)")
    _who(grant)
    grant.add_argument("amount", type=_positive_dollars, metavar="AMOUNT_USD", help="dollars, e.g. 5 or 0.50")
    grant.add_argument("--reason", default="granted from the command line", help="recorded with the entry")
    grant.add_argument("--json", action="store_true")

    show = actions.add_parser("show", help="a member's balance, reservations and allowance")
    _who(show)
    show.add_argument("--json", action="store_true")

    allowance = actions.add_parser("allowance", help="set a guild's periodic allowance per member")
    allowance.add_argument("--guild", default=CLI_GUILD, help='the guild (default: "", the command line\'s own)')
    allowance.add_argument("amount", type=_dollars, metavar="AMOUNT_USD", help="dollars per member per period")
    allowance.add_argument("--period", choices=[p.value for p in Period], default=Period.DAILY.value)
    allowance.add_argument("--json", action="store_true")

    ledger = commands.add_parser("ledger", help="check the quota ledger")
    ledger_actions = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verify = ledger_actions.add_parser("verify", help="recompute every balance from its entries (exit 1 if any differ)")
    verify.add_argument("--json", action="store_true")


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default=CLI_USER, help=f"the member (default: {CLI_USER})")
    parser.add_argument("--guild", default=CLI_GUILD, help='the guild (default: "", the command line\'s own)')


def cli_actor() -> str:
    """Who made an entry from the command line, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers: still say where it came from
        return "cli"


@asynccontextmanager
async def _open_ledger(settings: Settings) -> AsyncIterator[Ledger]:
    async with open_app(settings) as app:
        yield app.ledger


def balance_summary(balance: Balance, guild_id: str, user_id: str) -> dict[str, Any]:
    return {
        "account_id": balance.account_id,
        "guild_id": guild_id,
        "user_id": user_id,
        "unlimited": balance.unlimited,
        "balance_usd": usd_str(balance.balance),
        "reserved_usd": usd_str(balance.reserved),
        "available_usd": None if balance.unlimited else usd_str(balance.available),
        "allowance_usd": usd_str(balance.allowance),
        "allowance_left_usd": usd_str(balance.allowance_left),
        "extra_usd": usd_str(balance.extra),
        "period": balance.period.value if balance.period else None,
        "period_start": iso(balance.period_start) if balance.period_start else None,
        "next_refill": iso(balance.next_refill) if balance.next_refill else None,
    }


def _print_balance(balance: Balance) -> None:
    print(f"account      {balance.account_id}")
    if balance.unlimited:
        spent = f" (net spending while unlimited: {fmt_usd(-balance.balance)})" if balance.balance < 0 else ""
        print(f"balance      {fmt_usd(balance.balance)}{spent}")
        print(f"reserved     {fmt_usd(balance.reserved)}")
        print("available    unlimited")
        return
    print(f"balance      {fmt_usd(balance.balance)}")
    print(f"reserved     {fmt_usd(balance.reserved)}  (held for jobs in progress)")
    print(f"available    {fmt_usd(balance.available)}")
    if balance.allowance and balance.period:
        print(f"allowance    {fmt_usd(balance.allowance)} {balance.period}, {fmt_usd(balance.allowance_left)} left")
    else:
        print("allowance    none")
    print(f"extra        {fmt_usd(balance.extra)}  (granted, does not expire)")
    if balance.next_refill and balance.allowance:
        print(f"next refill  {balance.next_refill:%Y-%m-%d %H:%M} UTC")


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data))


async def cmd_quota(args: argparse.Namespace, settings: Settings) -> int:
    async with _open_ledger(settings) as ledger:
        if args.quota_command == "allowance":
            policy = await ledger.set_allowance(args.guild, args.amount, args.period, actor=cli_actor())
            if args.json:
                _emit({"guild_id": args.guild, "allowance_usd": usd_str(policy.amount), "period": policy.period.value})
            else:
                print(f"guild {args.guild!r}: each member gets {fmt_usd(policy.amount)} {policy.period}")
            return EXIT_OK
        account_id = await ledger.account_for_user(args.guild, args.user)
        if args.quota_command == "grant":
            was_unlimited = (await ledger.balance(account_id)).unlimited
            balance = await ledger.grant(account_id, args.amount, actor=cli_actor(), reason=args.reason)
            if args.json:
                _emit({"granted_usd": usd_str(args.amount), **balance_summary(balance, args.guild, args.user)})
                return EXIT_OK
            print(f"granted {fmt_usd(args.amount)} to {account_id}; {fmt_usd(balance.available)} available")
            if was_unlimited:
                print(f"{account_id} was unlimited; from now on it spends only its quota")
            return EXIT_OK
        balance = await ledger.balance(account_id)
    if args.json:
        _emit(balance_summary(balance, args.guild, args.user))
    else:
        _print_balance(balance)
    return EXIT_OK


async def cmd_ledger(args: argparse.Namespace, settings: Settings) -> int:
    async with _open_ledger(settings) as ledger:
        mismatches = await ledger.verify()
        accounts, entries = await ledger.counts()
    if args.json:
        _emit(
            {
                "ok": not mismatches,
                "accounts": accounts,
                "entries": entries,
                "mismatches": [
                    {"account_id": m.account_id, "job_id": m.job_id, "what": m.what, "expected": m.expected,
                     "found": m.found, "message": m.message}
                    for m in mismatches
                ],
            }
        )  # fmt: skip
    elif mismatches:
        for mismatch in mismatches:
            print(f"MISMATCH {mismatch.message}")
        print(f"{len(mismatches)} mismatch(es) in {accounts} accounts, {entries} entries")
    else:
        print(f"ok: {accounts} accounts, {entries} entries; every balance equals the sum of its entries")
    return EXIT_MISMATCH if mismatches else EXIT_OK
