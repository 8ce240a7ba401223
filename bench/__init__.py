"""reelbot's benchmarks: loopback scenarios measured against their goals and their physical limits.

`python -m bench` runs every scenario (`--quick` for a short run, `--only NAME,...` for some) and writes a
Markdown table to `bench/RESULTS.md` (`--out PATH` elsewhere). Each scenario's measured side runs in a process of
its own, and the loopback fakes it talks to (provider APIs, Discord) in another, so one side's memory and CPU
never count against the other. Nothing leaves 127.0.0.1.

Scenarios (one module each): `ack` (200 `/generate` interactions at once through the fake Discord), `jobs`
(1,000 jobs in flight through the engine, polling and webhooks), `peers` (the same jobs through the `wavespeed`
SDK and `fal-client`), `ledger` (1,000 concurrent reservations) and `stream` (a 50 MB clip downloaded and
fitted).
"""
