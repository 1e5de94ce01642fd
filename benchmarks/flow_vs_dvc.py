"""Benchmark: the Prefect flow vs `dvc repro`, cold and no-op, on the same params.

    .venv/bin/python -m benchmarks.flow_vs_dvc [--repeats 3] [--cold-repeats 2] [--small] [--skip-cold] [--json out.json]

Each measurement runs in a fresh temporary git + DVC copy of the project (tests/conftest.py),
as a separate process, timed wall-clock from start to exit:

- `dvc repro` cold (nothing computed yet) and no-op (everything up to date);
- the flow in a new Python process, cold and no-op, with a running `prefect server start`
  (127.0.0.1, started here and stopped after), and no-op right after a `dvc repro` (DVC's
  records adopted); cold and no-op runs alternate with the `dvc repro` ones;
- the same flow in ephemeral mode (no server: each process starts a temporary one).

The flow processes also report how long `import flows.pipeline` and the flow call took, so the
fixed cost of starting Python + Prefect is visible apart from the orchestration overhead.
Targets (issue 7): no-op flow within 2x the `dvc repro` no-op with a running server, a cold
flow run within 1.2x the cold `dvc repro`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# the child mode: run the flow once in this process, as `fitline run` does (run_pipeline: the
# commit tag, no heartbeats), and report import and flow time
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from flows.pipeline import run_pipeline
t1 = time.perf_counter()
states = run_pipeline(root=sys.argv[1], retries=0)
t2 = time.perf_counter()
print("BENCH " + json.dumps({"import_s": t1 - t0, "flow_s": t2 - t1, "states": states}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               GX_ANALYTICS_ENABLED="false")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def dvc_repro(repo: Path) -> dict:
    wall, out = _timed([str(BIN / "dvc"), "repro"], repo, _env())
    return {"wall_s": wall, "stages_run": out.count("Running stage")}


def flow_run(repo: Path, env: dict[str, str]) -> dict:
    wall, out = _timed([sys.executable, "-c", CHILD, str(repo)], ROOT, env)
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    return {"wall_s": wall, **json.loads(line[len("BENCH "):])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 180) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1, stopped on exit; yields its API URL."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=_env(PREFECT_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def bench_params(small: bool) -> str:
    """The project's params.yaml, or with the tests' small overrides (`--small`)."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import SMALL_PARAMS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if small:
        def merge(base: dict, over: dict) -> dict:
            for k, v in over.items():
                base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            return base
        params = merge(params, yaml.safe_load(SMALL_PARAMS))
    return yaml.safe_dump(params, sort_keys=False)


def run(repeats: int, cold_repeats: int, small: bool, cold: bool) -> dict:
    from tests.conftest import make_pipeline_repo

    params = bench_params(small)
    results: dict = {"repeats": repeats, "cold_repeats": cold_repeats, "small_params": small,
                     "dvc_cold": [], "flow_cold": []}
    with tempfile.TemporaryDirectory(prefix="fitline-bench-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "prefect-home"
        home.mkdir()
        eph_repo = make_pipeline_repo(tmp_path / "ephemeral", params)
        with prefect_server(home) as url:
            served = _env(PREFECT_HOME=str(home), PREFECT_API_URL=url)
            # cold runs alternate between the two tools, each on a fresh copy, so a change in
            # the machine's load during the benchmark hits both alike
            for i in range(cold_repeats):
                dvc_repo = make_pipeline_repo(tmp_path / f"dvc{i}", params)
                flow_repo = make_pipeline_repo(tmp_path / f"flow{i}", params)
                print(f"cold run {i + 1}/{cold_repeats}: dvc repro, then the flow (server running) ...", flush=True)
                results["dvc_cold"].append(dvc_repro(dvc_repo))
                results["flow_cold"].append(flow_run(flow_repo, served))
            noop_dvc, noop_flow = [], []
            for _ in range(repeats):  # interleaved as well
                noop_dvc.append(dvc_repro(dvc_repo))
                noop_flow.append(flow_run(flow_repo, served))
            results["dvc_noop"], results["flow_noop"] = noop_dvc, noop_flow
            results["flow_after_dvc_repro"] = flow_run(dvc_repo, served)

        ephemeral = _env(PREFECT_HOME=str(home))
        if cold:
            print("flow in ephemeral mode, cold ...", flush=True)
            results["ephemeral_cold"] = flow_run(eph_repo, ephemeral)
        else:
            _timed([str(BIN / "dvc"), "repro"], eph_repo, _env())
        results["ephemeral_noop"] = [flow_run(eph_repo, ephemeral) for _ in range(repeats)]
    return results


def _median(runs: list[dict], key: str = "wall_s") -> float:
    return statistics.median(r[key] for r in runs)


def report(r: dict) -> str:
    dvc_noop = _median(r["dvc_noop"])
    flow_noop = _median(r["flow_noop"])
    lines = [
        f"{'measurement':44} {'wall s':>8} {'import s':>9} {'flow s':>8}",
        f"{'dvc repro, cold (median)':44} {_median(r['dvc_cold']):8.2f}",
        f"{'dvc repro, no-op (median)':44} {dvc_noop:8.2f}",
    ]

    def row(label: str, x: dict | list) -> None:
        runs = x if isinstance(x, list) else [x]
        lines.append(f"{label:44} {_median(runs):8.2f} {_median(runs, 'import_s'):9.2f} {_median(runs, 'flow_s'):8.2f}")

    row("flow, server running, cold (median)", r["flow_cold"])
    row("flow, server running, no-op (median)", r["flow_noop"])
    row("flow, server running, after dvc repro", r["flow_after_dvc_repro"])
    if "ephemeral_cold" in r:
        row("flow, ephemeral, cold", r["ephemeral_cold"])
    row("flow, ephemeral, no-op (median)", r["ephemeral_noop"])
    lines.append("")
    lines.append(f"no-op ratio (server running): {flow_noop / dvc_noop:.2f}x  (target <= 2x)")
    lines.append(f"cold ratio (server running):  {_median(r['flow_cold']) / _median(r['dvc_cold']):.2f}x  "
                 "(target <= 1.2x)")
    lines.append(f"no-op ratio of the flow call alone (process start and imports left out): "
                 f"{_median(r['flow_noop'], 'flow_s') / dvc_noop:.2f}x")
    lines.append(f"states of the no-op runs: {r['flow_noop'][0]['states']}")
    lines.append(f"states after dvc repro:   {r['flow_after_dvc_repro']['states']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="no-op runs of each kind (median reported)")
    p.add_argument("--cold-repeats", type=int, default=2, help="cold runs of dvc repro and of the flow")
    p.add_argument("--small", action="store_true", help="the tests' small params instead of params.yaml")
    p.add_argument("--skip-cold", action="store_true", help="skip the cold ephemeral flow run")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args(argv)
    results = run(args.repeats, args.cold_repeats, args.small, cold=not args.skip_cold)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
