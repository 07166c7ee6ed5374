"""What the flow scripts share on the command line."""

from __future__ import annotations

import sys

_EXIT_CODE: list[int] = []


def skip_teardown_at_exit() -> None:
    """Call first thing in a command: once the command has returned its exit code (`exit`) and
    every exit handler has run (Prefect's log and event flushes, Comet's archive, logging's), the
    process ends without the interpreter's own teardown. That teardown frees every object and
    unloads the native libraries one by one: about 1 s measured after a run on the demo data, for
    nothing. Handlers run last-registered first, so this one, registered before any library, runs
    after all of them. An uncaught exception still exits the usual way."""
    import atexit

    atexit.register(_end_now)


def _end_now() -> None:
    if not _EXIT_CODE:
        return
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing left to say
            pass
    os._exit(_EXIT_CODE[0])


def exit(code: int) -> None:  # noqa: A001 - the command's sys.exit
    """sys.exit(code), and let `skip_teardown_at_exit`'s handler end the process with this code."""
    _EXIT_CODE[:] = [code]
    sys.exit(code)


def stop_local_server() -> None:
    """Stop the local server now rather than at exit (Prefect's own temporary server says goodbye on
    the console, which must not come after our result or error). Does nothing when PREFECT_API_URL
    points at a real server, and imports nothing when Prefect was never imported (an early error)."""
    from config import local_server

    if "prefect" not in sys.modules:
        local_server.stop()
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # Send the logs and events still queued while the server is up, then stop it.
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # nothing must mask the command's own result
            pass
    local_server.stop()  # the one flows/train.py started, if it did
    server_module = sys.modules.get("prefect.server.api.server")  # Prefect's own, if a flow started it
    if server_module is not None:
        server_module.SubprocessASGIServer().stop()


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
    if report.stages:
        from tasks.monitoring import format_stages

        print()
        print(format_stages(report.stages))
    print()
    print(reporting.format_gate(report))
    tracking = reporting.format_tracking(report)
    if tracking:
        print(tracking)
