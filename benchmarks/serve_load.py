"""`fitline serve-model` under a bounded load on 127.0.0.1, next to in-process ONNX Runtime.

    .venv/bin/python benchmarks/serve_load.py [--model models/model.onnx] [--requests 50000]
        [--clients 8] [--batches 1 256]

Starts the server as a subprocess on a free loopback port, then for each batch size sends
`--requests` POST /invocations (dataframe_split) from `--clients` concurrent clients and reports
req/s, rows/s, p50/p99 latency and errors; the server's RSS before and after the batch-1 run
shows whether memory grows with requests. The ceiling: the same rows through one in-process
ORT session (OnnxModel.run), on the same machine, in the same run. Every loop is bounded in
count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.serving.predict import OnnxModel, predict_frame  # noqa: E402

TIME_LIMIT = 600.0  # seconds per batch size, whatever --requests says


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, port: int) -> subprocess.Popen:
    code = ("import sys; from stages.serving.server import serve; "
            f"serve({str(model)!r}, '127.0.0.1', {port}, metrics_root={str(ROOT)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode()[-2000:]}")


def sample_rows(model: OnnxModel, n: int) -> pd.DataFrame:
    """Rows of the test split when the workspace has one, else standard normal features."""
    test = ROOT / "data" / "test.parquet"
    if test.exists():
        df = pd.read_parquet(test)
        df = df[[c for c in model.feature_names]]
        return df.sample(n=n, replace=len(df) < n, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.standard_normal((n, len(model.feature_names))), columns=model.feature_names)


def load(port: int, body: bytes, requests: int, clients: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = requests // clients
    deadline = time.monotonic() + TIME_LIMIT

    def client() -> None:
        mine = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            for _ in range(per_client):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                try:
                    ok = c.post("/invocations", content=body, headers={"content-type": "application/json"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t0)
                if not ok:
                    with lock:
                        errors[0] += 1
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "req_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "errors": errors[0]}


def in_process(model: OnnxModel, df: pd.DataFrame, repeats: int) -> float:
    """Calls per second of predict_frame on one in-process session (the server's ceiling)."""
    predict_frame(model, df)
    t0 = time.perf_counter()
    for _ in range(repeats):
        predict_frame(model, df)
    return repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "model.onnx")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    args = ap.parse_args()
    model = OnnxModel(args.model, threads=1)
    port = free_port()
    server = start_server(args.model, port)
    try:
        print(f"model {args.model} ({model.task}, {len(model.feature_names)} inputs); {args.clients} clients; "
              f"{os.cpu_count()} cores")
        print("| batch | requests | req/s | rows/s | p50 ms | p99 ms | errors | server RSS MiB before -> after "
              "| in-process calls/s (ceiling) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for batch in args.batches:
            df = sample_rows(model, batch)
            body = json.dumps({"dataframe_split": {"columns": list(df.columns), "data": df.to_numpy().tolist()}}).encode()
            before = rss_mib(server.pid)
            r = load(port, body, args.requests if batch == 1 else max(args.requests // 10, args.clients), args.clients)
            after = rss_mib(server.pid)
            ceiling = in_process(model, df, 2000 if batch == 1 else 200)
            print(f"| {batch} | {r['requests']} | {r['req_s']:.0f} | {r['req_s'] * batch:.0f} | {r['p50_ms']:.2f} "
                  f"| {r['p99_ms']:.2f} | {r['errors']} | {before:.0f} -> {after:.0f} | {ceiling:.0f} |", flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
