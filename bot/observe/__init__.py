"""Seeing what reelbot does in production: metrics, health checks, their HTTP server, structured logs.

Nothing here imports discord.py; the Discord-only pieces (the gateway check, the 429 counter) work on plain
objects and logger names, and bot/app.py wires them in.
"""
