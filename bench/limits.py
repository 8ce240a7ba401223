"""The physical limits each figure is set beside, measured on this machine: a loopback round trip, a loopback copy
of the clip's bytes into a file, and SQLite's bare commit rate with reelbot's settings."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import statistics
import threading
import time
from pathlib import Path

CHUNK = 256 * 1024  # the size bot.media.fetch reads in


async def loopback_rtt_us(rounds: int = 2000) -> float:
    """Median round trip of a small message over a loopback TCP connection, through asyncio (µs)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        writer.write(b"ping")
        await writer.drain()
        await reader.readexactly(4)
        times.append(time.perf_counter() - start)
    writer.close()
    server.close()
    await server.wait_closed()
    return statistics.median(times[rounds // 10 :]) * 1e6


def loopback_copy(nbytes: int, dest: Path) -> tuple[float, float]:
    """Send `nbytes` over a loopback TCP connection (from a thread) and write them to `dest` in 256 KiB chunks, as a
    download does but without HTTP: (wall seconds, CPU seconds of the receiving thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    block = os.urandom(CHUNK)

    def send() -> None:
        conn, _ = listener.accept()
        with conn:
            left = nbytes
            while left > 0:
                piece = block if left >= CHUNK else block[:left]
                conn.sendall(piece)
                left -= len(piece)

    sender = threading.Thread(target=send)
    sender.start()
    cpu0, start = time.thread_time(), time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn, dest.open("wb") as out:
        got = 0
        while got < nbytes:
            data = conn.recv(CHUNK)
            if not data:
                break
            out.write(data)
            got += len(data)
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu0
    sender.join()
    listener.close()
    dest.unlink(missing_ok=True)
    return wall, cpu


def sqlite_commit_rate(path: Path, commits: int = 2000) -> float:
    """Write transactions per second on a bare SQLite file with reelbot's settings (WAL, synchronous=NORMAL):
    BEGIN IMMEDIATE, one small INSERT, COMMIT — the floor under any ledger operation, which is such a
    transaction with a few more reads and writes inside."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER)")
    start = time.perf_counter()
    for i in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (i,))
        conn.execute("COMMIT")
    rate = commits / (time.perf_counter() - start)
    conn.close()
    return rate
