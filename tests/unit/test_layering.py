"""The core never imports discord.py: only bot/app.py and cogs/ may."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import bot

CORE = sorted(
    name for _, name, _ in pkgutil.walk_packages(bot.__path__, "bot.") if name not in ("bot.app", "bot.__main__")
)


def test_core_modules_never_import_discord() -> None:
    assert len(CORE) > 20
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'discord' or m.startswith('discord.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[2])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
