"""What the flow scripts share on the command line."""

from __future__ import annotations

import sys


def stop_local_server() -> None:
    """Stop Prefect's ephemeral server now rather than at exit, so that its goodbye line does not
    come after our result or error. Does nothing when PREFECT_API_URL points at a real server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    # Send the logs and events still queued while the server is up, then stop it.
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # nothing must mask the command's own result
            pass
    SubprocessASGIServer().stop()


def fail(message: object) -> int:
    """End a command with one readable line on stderr and exit code 2."""
    stop_local_server()
    print(f"error: {message}", file=sys.stderr)
    return 2


def print_summary(report) -> None:
    """The end of a command: the leaderboard and the gate decision, after the server has stopped."""
    from tasks import reporting

    stop_local_server()
    print()
    print(f"Run {report.run_id}: {report.run_dir}")
    print(reporting.format_leaderboard(report))
    print()
    print(reporting.format_gate(report))
