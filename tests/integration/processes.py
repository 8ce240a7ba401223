"""Racing OS processes against one database: start them, wait until each says it is ready, release them
together, and collect what each printed."""

from __future__ import annotations

import subprocess


def release_together(workers: list[subprocess.Popen[str]], *, timeout: float = 60) -> list[str]:
    """Each worker prints `ready`, waits for `go` on stdin, does its part and prints a report; returns the
    reports (stdout) in order. A worker that fails fails the test with its stderr; none is left running."""
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:  # as close to the same moment as the OS allows
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err
            reports.append(out)
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
