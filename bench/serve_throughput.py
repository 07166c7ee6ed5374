"""Throughput of `POST /predict` on loopback (run by hand).

    .venv/bin/python bench/serve_throughput.py [--registry artifacts/registry] [--seconds 10] [--concurrency 8]

Starts the service (`python -m tasks.serving`, one uvicorn process) on a free port of 127.0.0.1,
then an asynchronous load generator (httpx, `--concurrency` requests in flight) sends the rows of
the champion's own test split, 1 row and then 100 rows per request, for `--seconds` each after a
short warm-up. Prints requests/s, rows/s and latency percentiles per batch size. The generator runs
on the same machine and takes CPU from the service: the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, rows: list[dict], batch: int, seconds: float, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    bodies = [rows[(i * batch) % len(rows):][:batch] or rows[:batch] for i in range(64)]
    bodies = [b if len(b) == batch else (b * batch)[:batch] for b in bodies]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop_at:
                begin = time.perf_counter()
                response = await client.post(f"{url}/predict", json=bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - begin)
                errors += response.status_code != 200
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "rows_per_s": len(latencies) * batch / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=str(ROOT / "artifacts" / "registry"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()

    import httpx
    import pandas as pd

    from tasks import registry

    name = registry.resolve_model_name(args.registry, args.model)
    meta = registry.read_metadata(args.registry, name, registry.resolve_version(args.registry, name))
    test_split = Path(meta["run_dir"]) / "splits" / "test.parquet"
    if not test_split.is_file():
        raise SystemExit(f"{test_split} is gone; run `make train` again")
    rows = pd.read_parquet(test_split).drop(columns=[meta["target"]]).to_dict(orient="records")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen([sys.executable, "-m", "tasks.serving", "--registry", args.registry, "--port", str(port),
                                *(["--model", args.model] if args.model else [])],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit("the service did not start")
            time.sleep(0.2)
        print(f"{name} version {meta['version']} ({meta['family']}, {len(meta['features'])} features), "
              f"{os.cpu_count()} cores, {args.concurrency} requests in flight, {args.seconds:.0f} s per size")
        for batch in args.batches:
            asyncio.run(load(url, rows, batch, 1.0, args.concurrency))  # warm-up
            result = asyncio.run(load(url, rows, batch, args.seconds, args.concurrency))
            print(f"{batch:>4} row(s)/request: {result['rps']:8,.0f} requests/s {result['rows_per_s']:9,.0f} rows/s  "
                  f"latency p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                  f"({result['requests']:,} requests, {result['errors']} errors)")
    finally:
        service.terminate()
        service.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
