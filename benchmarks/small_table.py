"""A cold run of the default pipeline on a small table, before and after a change, side by side.

    .venv/bin/python benchmarks/pipeline_scale.py --small                  # 1,000 rows, 3 repeats
    .venv/bin/python benchmarks/small_table.py --before 9de2658 --repeats 5 --json small.json

Two sides: BEFORE is the code of a git revision (`git archive`), AFTER is the working tree. Each
side becomes a fresh git + DVC repository with the side's own params.yaml, data.n_samples set to
`--rows` (every other param its default: the real default run, early stopping included). Each
repeat runs, interleaved so the shared machine's load hits both sides alike:

- every stage's command from the side's dvc.yaml as a child process in a fresh copy, measured by
  os.wait4 (wall, peak RSS) with PYTHONPROFILEIMPORTTIME=1: the stage's wall splits into
  interpreter start (`python -c pass`, measured in the same repeat), imports (the top-level
  `-X importtime` entries of the process, lazy imports inside functions included, less the
  modules a bare interpreter already imports) and work (the rest);
- `dvc repro` in another fresh copy (no import profiling): the whole cold run as a user sees it,
  DVC's hashing and the card stage included;
- a fresh process computing one sweep trial's cache key: what a `fitline sweep`, `compare` or
  `tune` process pays to find its trials cached (torch's import, before).

Reports medians over the repeats and the after/before ratios, and checks that both sides wrote
the same metrics (eval.json whole, train.json without its timings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BIN = Path(sys.executable).parent
# what a pipeline copy needs (as tests/conftest.py copies it): never .venv, .git or outputs
PROJECT_FILES = ["stages", "flows", "params.yaml", "dvc.yaml", "pyproject.toml", ".dvcignore", "data/raw"]
TIMING_KEYS = ("seconds", "samples_per_second")  # train.json keys that hold timings


def env(profile_imports: bool) -> dict[str, str]:
    out = {**os.environ, "PATH": f"{PYTHON_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out.pop("PYTHONPATH", None)  # `python -m stages.x` in the copy imports the copy's code
    out.pop("PYTHONPROFILEIMPORTTIME", None)
    if profile_imports:
        out["PYTHONPROFILEIMPORTTIME"] = "1"
    return out


def run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, check=False, cwd=cwd, env=env(False), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{args} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def set_param(params: dict[str, Any], assignment: str) -> None:
    """`train.batch_size=256` into the params mapping (the value parsed as YAML)."""
    key, _, value = assignment.partition("=")
    *path, last = key.split(".")
    section = params
    for part in path:
        section = section[part]
    section[last] = yaml.safe_load(value)


def make_side(dest: Path, rev: str | None, rows: int, overrides: list[str]) -> Path:
    """A git + DVC repository holding the project at `rev` (None: the working tree)."""
    dest.mkdir(parents=True)
    if rev is None:
        for name in PROJECT_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, dest / name)
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *PROJECT_FILES],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"]["n_samples"] = rows
    for assignment in overrides:
        set_param(params, assignment)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("__pycache__/\n")
    for args in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "bench@fitline.local"],
                 ["git", "config", "user.name", "fitline bench"], ["dvc", "init", "-q"],
                 ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "init"]):
        run(args, dest)
    return dest


def startup_modules() -> set[str]:
    """Modules a bare interpreter imports before running anything (site, encodings, ...)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], check=True, capture_output=True,
                          text=True, env=env(False))
    return {name for name, _ in top_level_imports(proc.stderr)}


def top_level_imports(text: str) -> list[tuple[str, float]]:
    """(module, cumulative seconds) of each outermost `-X importtime` entry in `text`."""
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        name = parts[2][1:]
        if not name.startswith(" "):
            out.append((name, int(parts[1]) / 1e6))
    return out


def timed(cmd: str, cwd: Path, log_path: Path, profile_imports: bool) -> dict[str, float]:
    """Wall and peak RSS of `bash -c cmd` and its descendants; fails loudly with the log's tail."""
    with open(log_path, "w") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, env=env(profile_imports), stdout=log,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"`{cmd}` failed in {cwd}:\n{log_path.read_text()[-3000:]}")
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024}


def interpreter_start(cwd: Path, n: int = 5) -> float:
    """Median wall of `python -c pass` through bash, as a stage's command is started."""
    walls = [timed("python -c pass", cwd, cwd / "start.log", False)["wall_s"] for _ in range(n)]
    return statistics.median(walls)


def run_stages(template: Path, work: Path, start_s: float, startup: set[str],
               skip: set[str]) -> dict[str, dict[str, float]]:
    """Each stage's command in a fresh copy of `template`: wall = start + imports + work."""
    shutil.copytree(template, work)
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        if name in skip:
            continue
        log_path = work / f"{name}.bench.log"
        m = timed(stage["cmd"], work, log_path, True)
        imports = sum(s for mod, s in top_level_imports(log_path.read_text()) if mod not in startup)
        m.update(start_s=start_s, imports_s=imports, work_s=m["wall_s"] - start_s - imports)
        result[name] = m
    return result


# what a `fitline sweep`/`compare`/`tune` process computes for each trial to find it cached
TRIAL_KEY = ("from stages.core.params import EvaluateParams, TrainParams; "
             "from stages.tools.sweep import code_fingerprint, trial_key; "
             "trial_key(TrainParams(), EvaluateParams(), 'data', code_fingerprint())")


def run_trial_key(template: Path) -> float:
    """Wall of a fresh process that computes one trial's cache key with the side's code."""
    return timed(f'python -c "{TRIAL_KEY}"', template, template.parent / "trial-key.log", False)["wall_s"]


def run_repro(template: Path, work: Path) -> float:
    shutil.copytree(template, work)
    return timed("dvc repro -q", work, work / "repro.bench.log", False)["wall_s"]


def metric_values(work: Path) -> dict[str, Any]:
    """eval.json whole, train.json without the timings that differ run to run."""
    out: dict[str, Any] = {"eval": json.loads((work / "metrics/eval.json").read_text())}
    train = json.loads((work / "metrics/train.json").read_text())
    out["train"] = {k: v for k, v in train.items() if not any(t in k for t in TIMING_KEYS)}
    return out


def median_stages(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]} for name in runs[0]}


def table(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
          repro: dict[str, float], trial_key: dict[str, float]) -> str:
    """Markdown: per stage, before → after of wall, imports, work and peak RSS, and the ratio."""
    header = ("| stage | wall s before → after | × | start s | imports s before → after | "
              "work s before → after | peak RSS MiB before → after |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    names = [n for n in before if n in after]
    for name in names:
        b, a = before[name], after[name]
        lines.append(f"| {name} | {b['wall_s']:.2f} → {a['wall_s']:.2f} | {a['wall_s'] / b['wall_s']:.2f} | "
                     f"{a['start_s']:.2f} | {b['imports_s']:.2f} → {a['imports_s']:.2f} | "
                     f"{b['work_s']:.2f} → {a['work_s']:.2f} | {b['rss_mib']:.0f} → {a['rss_mib']:.0f} |")
    wb, wa = (sum(s[n]["wall_s"] for n in names) for s in (before, after))
    lines.append(f"| **sum of stages** | {wb:.2f} → {wa:.2f} | {wa / wb:.2f} | | | | |")
    if repro:
        lines.append(f"| **`dvc repro`, cold** | {repro['before']:.2f} → {repro['after']:.2f} | "
                     f"{repro['after'] / repro['before']:.2f} | | | | |")
    if trial_key:
        lines.append(f"| a sweep trial's cache key, fresh process | {trial_key['before']:.2f} → "
                     f"{trial_key['after']:.2f} | {trial_key['after'] / trial_key['before']:.2f} | | | | |")
    return "\n".join(lines)


def compare(before_rev: str, rows: int, repeats: int, repro: bool, skip: set[str],
            keep: Path | None, overrides: list[str]) -> dict[str, Any]:
    startup = startup_modules()
    tmp = Path(tempfile.mkdtemp(prefix="small-table-", dir=keep))
    try:
        sides = {"before": make_side(tmp / "before", before_rev, rows, overrides),
                 "after": make_side(tmp / "after", None, rows, overrides)}
        stage_runs: dict[str, list] = {"before": [], "after": []}
        repro_runs: dict[str, list] = {"before": [], "after": []}
        key_runs: dict[str, list] = {"before": [], "after": []}
        metrics: dict[str, Any] = {}
        for i in range(repeats):
            start_s = interpreter_start(tmp)
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for side in order:
                work = tmp / f"{side}-stages-{i}"
                stage_runs[side].append(run_stages(sides[side], work, start_s, startup, skip))
                metrics.setdefault(side, metric_values(work))
                if keep is None:
                    shutil.rmtree(work)
                if repro:
                    repro_runs[side].append(run_repro(sides[side], tmp / f"{side}-repro-{i}"))
                key_runs[side].append(run_trial_key(sides[side]))
            print(f"  repeat {i + 1}/{repeats}: " + ", ".join(
                f"{s} {sum(m['wall_s'] for m in stage_runs[s][-1].values()):.1f} s"
                + (f" (dvc repro {repro_runs[s][-1]:.1f} s)" if repro else "") for s in order), flush=True)
        return {"rows": rows, "before_rev": before_rev, "repeats": repeats,
                "before": median_stages(stage_runs["before"]), "after": median_stages(stage_runs["after"]),
                "repro": {s: statistics.median(v) for s, v in repro_runs.items()} if repro else {},
                "repro_runs": repro_runs, "trial_key": {s: statistics.median(v) for s, v in key_runs.items()},
                "metrics": metrics, "same_metrics": metrics["before"] == metrics["after"]}
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before", default="9de2658", help="git revision of the BEFORE side (default: %(default)s)")
    parser.add_argument("--small-rows", type=int, default=1000, help="data.n_samples (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per side (medians)")
    parser.add_argument("--no-repro", action="store_true", help="skip the whole `dvc repro` runs")
    parser.add_argument("--skip", nargs="*", default=[], help="stages not to run stage by stage (e.g. card)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="params set on both sides, e.g. train.batch_size=256 (default: none)")


def report(args: argparse.Namespace, keep: Path | None = None, json_path: Path | None = None) -> None:
    what = f"params {' '.join(args.overrides)}" if args.overrides else "default params"
    print(f"{args.small_rows:,} rows, {what}: BEFORE {args.before}, AFTER the working tree, "
          f"{args.repeats} interleaved repeats", flush=True)
    result = compare(args.before, args.small_rows, args.repeats, not args.no_repro, set(args.skip), keep,
                     args.overrides)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result["before"], result["after"], result["repro"], result["trial_key"]))
    print()
    print("same metrics on both sides (eval.json; train.json without timings):", result["same_metrics"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--keep", type=Path, help="keep the copies (data, logs) under this folder")
    args = parser.parse_args()
    report(args, args.keep, args.json)


if __name__ == "__main__":
    main()
