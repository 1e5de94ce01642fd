"""Metrics for every commit: what a flow run records as Prefect artifacts, and reading it back.

Each run writes one version of the table artifact `fitline-metrics` (its versions are the
history) and one markdown report `fitline-report`. A row holds the git commit the run started
from (SHA, branch, dirty flag), sha256 digests of params.yaml and of the metrics files, and
every metric flattened to a dotted key prefixed by its file (`train.loss`, `eval.test.mse`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.contracts import METRICS_DIR, PARAMS_PATH
from stages.core.io import file_digest

log = logging.getLogger(__name__)

METRICS_KEY = "fitline-metrics"
REPORT_KEY = "fitline-report"
# row fields that describe the run rather than the model
META_FIELDS = ("commit", "branch", "dirty", "params_sha256", "metrics_sha256", "flow_run")


@dataclass(frozen=True)
class Commit:
    sha: str
    branch: str
    dirty: bool

    @property
    def short(self) -> str:
        return self.sha[:8]

    @property
    def tag(self) -> str:
        return f"commit:{self.short}"


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(root: str | os.PathLike[str]) -> Commit:
    """HEAD's SHA, branch and whether tracked files differ from it ('unknown' outside git)."""
    root = Path(root)
    sha = _git(root, "rev-parse", "HEAD") or "unknown"
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "unknown"
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return Commit(sha=sha, branch=branch, dirty=bool(status) if status is not None else True)


def uncommitted(root: str | os.PathLike[str], paths: list[str]) -> list[str]:
    """Which of `paths` (and every dvc.lock and .gitignore) are changed from git's index or
    untracked: what a run leaves for the user to `git add`."""
    specs = [":(glob)**/dvc.lock", ":(glob)**/.gitignore", *paths]
    listed = _git(Path(root), "ls-files", "--modified", "--others", "--exclude-standard", "--", *specs)
    return list(dict.fromkeys((listed or "").splitlines()))


def sha256_file(path: Path) -> str | None:
    """The file's sha256, or None when there is no such file."""
    return file_digest(path, "sha256") if path.is_file() else None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists by index; scalars kept as they are."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: obj} if prefix else {"value": obj}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def metric_prefix(path: str) -> str:
    """`metrics/train.json` -> `train`; files outside metrics/ keep their folder (`reports/x`)."""
    p = Path(path)
    parts = p.with_suffix("").parts
    return "/".join(parts[1:] if parts[0] == METRICS_DIR.name and len(parts) > 1 else parts)


def collect_metrics(root: str | os.PathLike[str], paths: list[str]) -> tuple[dict[str, Any], str]:
    """Flattened metrics of every existing JSON metrics file, and a digest over those files."""
    root = Path(root)
    values: dict[str, Any] = {}
    digest = hashlib.sha256()
    for rel in sorted(paths):
        path = root / rel
        file_sha = sha256_file(path)
        if file_sha is None:
            log.warning("metrics file %s does not exist; not recorded", rel)
            continue
        digest.update(f"{rel}\0{file_sha}\n".encode())
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("metrics file %s is not JSON (%s); only its digest is recorded", rel, exc)
            continue
        values.update({f"{metric_prefix(rel)}.{k}": v for k, v in flatten(data).items()})
    return values, digest.hexdigest()


def metrics_row(root: str | os.PathLike[str], commit: Commit, paths: list[str],
                flow_run: str | None = None) -> dict[str, Any]:
    """One history row: the run's commit, digests and every metric."""
    metrics, metrics_sha = collect_metrics(root, paths)
    return {
        "commit": commit.sha,
        "branch": commit.branch,
        "dirty": commit.dirty,
        "params_sha256": sha256_file(Path(root) / PARAMS_PATH),
        "metrics_sha256": metrics_sha,
        "flow_run": flow_run,
        **metrics,
    }


def report_markdown(row: dict[str, Any], stage_states: dict[str, str]) -> str:
    """A human-readable summary of one run for the Prefect UI."""
    dirty = " (dirty)" if row["dirty"] else ""
    lines = [f"# fitline run on `{row['commit'][:8]}`{dirty}, branch `{row['branch']}`", "",
             "| stage | state |", "| --- | --- |"]
    lines += [f"| {name} | {state} |" for name, state in stage_states.items()]
    lines += ["", f"params.yaml sha256: `{row['params_sha256']}`", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in row.items() if k not in META_FIELDS]
    return "\n".join(lines) + "\n"


def record_run(row: dict[str, Any], stage_states: dict[str, str]) -> None:
    """Write the table and markdown artifacts (inside a flow run, they attach to it)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    desc = f"fitline metrics of commit {row['commit'][:8]}{' (dirty)' if row['dirty'] else ''}"
    create_table_artifact(table=[row], key=METRICS_KEY, description=desc)
    create_markdown_artifact(markdown=report_markdown(row, stage_states), key=REPORT_KEY,
                             description=desc)


# ---------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class HistoryEntry:
    created: str  # ISO timestamp of the artifact version
    row: dict[str, Any]


def read_history(key: str = METRICS_KEY, page: int = 200) -> list[HistoryEntry]:
    """Every version of the metrics artifact, oldest first, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    entries: list[HistoryEntry] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            batch = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC, limit=page, offset=offset)
            for art in batch:
                data = json.loads(art.data) if isinstance(art.data, str) else art.data
                for row in data if isinstance(data, list) else []:
                    if isinstance(row, dict) and "commit" in row:
                        entries.append(HistoryEntry(created=art.created.isoformat(), row=row))
            if len(batch) < page:
                break
            offset += page
    entries.sort(key=lambda e: e.created)
    return entries


def per_commit(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """The latest run of each commit (a dirty tree counts apart), ordered oldest to newest."""
    latest: dict[tuple[str, bool], HistoryEntry] = {}
    for e in entries:  # entries are oldest first, so later runs replace earlier ones
        key = (e.row["commit"], bool(e.row.get("dirty")))
        latest.pop(key, None)
        latest[key] = e
    return list(latest.values())


def gate_metrics(root: str | os.PathLike[str]) -> list[str]:
    """The metrics the workspace's gate judges (params `gate`), in rule order; [] without a
    readable params.yaml or gate section. They are the default columns of `fitline history`:
    every numeric metric makes a table too wide to read."""
    from stages.core.errors import FitlineError
    from stages.core.params import load_params
    from stages.tools.gate_rules import parse_rules

    path = Path(root) / PARAMS_PATH
    if not path.is_file():
        return []
    try:
        rules = parse_rules(load_params(path).gate)
    except FitlineError as exc:
        log.warning("params.yaml gate rules unreadable (%s); showing every numeric metric", exc)
        return []
    return list(dict.fromkeys(rule.path for rule in rules))


def default_columns(entries: list[HistoryEntry], root: str | os.PathLike[str]) -> list[str] | None:
    """`fitline history`'s metrics when none are asked for: the gate's that these runs hold,
    or None (every numeric metric) when they hold none of them."""
    present = {k for e in entries for k in e.row}
    chosen = [m for m in gate_metrics(root) if m in present]
    return chosen or None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_history(entries: list[HistoryEntry], metrics: list[str] | None = None) -> str:
    """A plain-text table: one row per entry; metric columns chosen by name or prefix, by
    default every numeric metric (text such as a verdict's reasons would not fit a column)."""
    if not entries:
        return "no fitline runs recorded yet (key fitline-metrics)"
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e.row if k not in META_FIELDS and k not in keys]
    if metrics:
        keys = [k for k in keys if any(k == m or k.startswith(m + ".") for m in metrics)]
    else:
        keys = [k for k in keys if any(_is_number(e.row.get(k)) for e in entries)]
    header = ["date", "commit", "branch", *keys]
    rows = [[e.created[:19].replace("T", " "),
             e.row["commit"][:8] + ("+dirty" if e.row.get("dirty") else ""),
             str(e.row.get("branch", "")), *(_cell(e.row.get(k)) for k in keys)] for e in entries]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in rows)])
