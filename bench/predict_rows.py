"""Batch scoring of a large table: wall time and peak memory of `flows/predict.py` (run by hand).

    .venv/bin/python bench/predict_rows.py [--rows 1000000] [--features 40] [--chunk-rows 100000]

Trains a model on 20,000 rows of the synthetic table of bench/scale_rows.py (config/smoke.yaml's
budget: 2 trials per family), then scores `--rows` rows of the same kind, written as Parquet, with
a fresh `python flows/predict.py` process. Prints the wall time, the rows per second and the peak
RSS of the scoring process (its VmHWM) and of its whole process tree (sampled), next to the
float32 size of the input table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale_rows import _tree_rss, make_table, vm_hwm  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gauntlet-predict-bench-") as tmp:
        tmp = Path(tmp)
        train_table, table = tmp / "train.parquet", tmp / "score.parquet"
        make_table(train_table, 20_000, args.features, seed=1)
        size = make_table(table, args.rows, args.features, seed=2)
        artifacts = tmp / "artifacts"
        trained = subprocess.run(
            [sys.executable, "flows/train.py", "--config", "config/smoke.yaml", "--set", f"artifacts_dir={artifacts}",
             "--set", f"data.path={train_table}", "--set", "data.target=label"],
            cwd=ROOT, capture_output=True, text=True)
        if trained.returncode != 0:
            raise SystemExit(f"training failed:\n{trained.stdout[-3000:]}\n{trained.stderr[-3000:]}")
        print(f"{args.rows:,} rows x {args.features} float32 features ({size / 2**20:,.0f} MB as float32), "
              f"chunks of {args.chunk_rows:,} rows")
        output = tmp / "predictions.parquet"
        cmd = [sys.executable, "flows/predict.py", "--input", str(table), "--output", str(output),
               "--registry", str(artifacts / "registry"), "--chunk-rows", str(args.chunk_rows)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak, own = [0], [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                own[0] = max(own[0], vm_hwm(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        proc.wait()
        wall = time.perf_counter() - start
        reader.join()
        sampler.join()
        out = "".join(chunks)
        if proc.returncode != 0:
            raise SystemExit(f"predict failed:\n{out[-4000:]}")
        own = own[0]  # VmHWM: ru_maxrss would report this process's RSS at fork time (the 1M table built here)
        import pyarrow.parquet as pq

        written = pq.ParquetFile(output).metadata.num_rows
        print(f"scored {written:,} rows in {wall:.1f} s (whole command, Prefect start included): "
              f"{written / wall:,.0f} rows/s")
        print(f"peak RSS: predict process {own / 2**20:,.0f} MB, whole process tree {peak[0] / 2**20:,.0f} MB "
              f"(the input table is {size / 2**20:,.0f} MB as float32)")
        print(out.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
