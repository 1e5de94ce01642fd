"""Model versions through DVC's git-tag registry (GTO): `fitline promote`, `fitline models`, and
the ONNX file of a stage or version for `fitline predict` / `serve-model`.

A version is an annotated tag `model@vX.Y.Z` on a commit whose dvc.lock and metrics/ describe
the model; a stage assignment (`model#prod#N`) says which version holds the stage. Promotion
runs the CI gate against the version that holds the stage (absolute rules alone when none
does) and tags nothing unless it passes: the registry only records verdicts the gate gave.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stages.core.contracts import DVC_TMP_DIR, EVAL_METRICS_PATH, EXPORT_METRICS_PATH, ONNX_PATH, PARAMS_PATH
from stages.core.errors import FitlineError, first_line
from stages.core.params import load_params

log = logging.getLogger(__name__)

ARTIFACT = "model"  # dvc.yaml `artifacts:` name of models/model.onnx
Bump = Literal["patch", "minor", "major"]
KEY_METRICS = ("r2", "rmse", "accuracy", "log_loss")  # test metrics a tag message and `fitline models` show
FETCHED_DIR = DVC_TMP_DIR / "fitline-models"  # ONNX files of registered versions, fetched for serving


class RegistryError(FitlineError):
    """The workspace cannot be promoted as it is, or a stage/version does not exist (exit 2)."""

    exit_code = 2


class GateRefused(FitlineError):
    """The gate did not pass: nothing was tagged (exit 1)."""


@dataclass(frozen=True)
class Version:
    version: str
    commit: str
    stages: tuple[str, ...]
    created: str
    metrics: dict[str, float]


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RegistryError(f"git {' '.join(args)}: {first_line(proc.stderr or proc.stdout)}")
    return proc.stdout.strip()


def workspace_problems(root: Path) -> list[str]:
    """Why this workspace's HEAD is not the model it claims: uncommitted changes, or outputs and
    metrics that do not match dvc.lock."""
    problems = []
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        problems.append(f"uncommitted changes ({len(dirty.splitlines())} file(s)); commit them first")
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    status = json.loads(proc.stdout or "{}") if proc.returncode == 0 else None
    if status is None:
        problems.append(f"dvc status failed: {first_line(proc.stderr or proc.stdout)}")
    elif status:
        problems.append(f"the workspace does not match dvc.lock (stages {', '.join(sorted(status))}); "
                        "run `dvc repro` and commit dvc.lock and metrics/")
    return problems


def test_metrics(root: Path, rev: str | None = None) -> dict[str, float]:
    """The key test metrics of the workspace (rev None) or of a commit."""
    try:
        text = (root / EVAL_METRICS_PATH).read_text() if rev is None else _git(root, "show", f"{rev}:{EVAL_METRICS_PATH}")
        test = json.loads(text).get("test", {})
    except (OSError, ValueError, RegistryError):
        return {}
    return {k: test[k] for k in KEY_METRICS if isinstance(test.get(k), (int, float))}


def _message(metrics: dict[str, float], root: Path) -> str:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    try:
        drop = json.loads((root / EXPORT_METRICS_PATH).read_text()).get("metric_drop")
    except (OSError, ValueError):
        drop = None
    return f"fitline: test {shown}" + (f"; int8 drop {drop:.2g}" if isinstance(drop, float) else "")


def versions(root: str | Path = ".") -> list[Version]:
    """Registered versions, newest first, with the stages they hold and their test metrics."""
    from gto import api as gto
    from gto.exceptions import ArtifactNotFound

    root = Path(root)
    try:
        shown = gto.show(str(root), ARTIFACT)
    except ArtifactNotFound:
        shown = []  # declared but never registered, or not declared: no versions either way
    rows = [v for v in shown if v.get("registrations")]
    out = [Version(version=v["version"], commit=v["commit_hexsha"],
                   stages=tuple(s["stage"] for s in v.get("stages", []) if s.get("is_active", True)),
                   created=str(v["registrations"][-1]["created_at"])[:19],
                   metrics=test_metrics(root, v["commit_hexsha"])) for v in rows]
    return sorted(out, key=lambda v: v.created, reverse=True)


def stage_holder(root: Path, stage: str) -> Version | None:
    return next((v for v in versions(root) if stage in v.stages), None)


def promote(root: str | Path = ".", stage: str = "prod", bump: Bump = "patch") -> tuple[str, Any]:
    """Gate HEAD against the stage's holder; only when it passes, register a version and assign
    the stage. Returns (the new version, the gate's result)."""
    from gto import api as gto

    from stages.tools.gate import run_gate

    root = Path(root)
    problems = workspace_problems(root)
    if problems:
        raise RegistryError("cannot promote: " + "; ".join(problems))
    holder = stage_holder(root, stage)
    result = run_gate(load_params(root / PARAMS_PATH).gate, holder.commit if holder else None, root)
    against = f"{ARTIFACT}@{holder.version} ({stage})" if holder else "the absolute rules (no version holds the stage)"
    if result.exit_code == 2:
        why = [*result.errors, *(f"{r.rule}: {r.detail}" for r in result.rows if r.status == "error")]
        raise RegistryError(f"the gate cannot judge against {against}: {'; '.join(why) or 'no rule judged'}")
    if result.exit_code != 0:
        failed = [f"{r.rule}: {r.detail}" for r in result.rows if r.status == "fail"]
        raise GateRefused(f"the gate refused HEAD against {against}; nothing tagged: {'; '.join(failed)}")
    head = _git(root, "rev-parse", "HEAD")
    latest = versions(root)
    message = _message(test_metrics(root), root)
    reg = gto.register(str(root), ARTIFACT, head, message=message, **({f"bump_{bump}": True} if latest else {}))
    version = getattr(reg, "version", None) or gto.find_latest_version(str(root), ARTIFACT).version
    gto.assign(str(root), ARTIFACT, stage, version=version, message=f"promoted by fitline: gate passed against {against}")
    log.info("%s@%s (%s) holds %s; %s", ARTIFACT, version, head[:10], stage, message)
    return version, result


def resolve(root: str | Path, stage: str | None = None, version: str | None = None) -> Version:
    """The registered version named by `version`, or the one holding `stage`."""
    root = Path(root)
    found = versions(root)
    if version is not None:
        match = next((v for v in found if v.version in (version, f"v{version}")), None)
        if match is None:
            known = ", ".join(v.version for v in found) or "none"
            raise RegistryError(f"{ARTIFACT}@{version} is not registered (versions: {known}; `fitline models`)")
        return match
    match = next((v for v in found if stage in v.stages), None)
    if match is None:
        raise RegistryError(f"no version of {ARTIFACT} holds stage {stage!r} (`fitline promote --stage {stage}`)")
    return match


def fetch_model(root: str | Path = ".", stage: str | None = None, version: str | None = None,
                path: Path = ONNX_PATH) -> Path:
    """The ONNX file of a registered version, from the DVC cache (or remote), under .dvc/tmp."""
    import dvc.api

    root = Path(root)
    v = resolve(root, stage, version)
    dest = root / FETCHED_DIR / v.version / path.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with dvc.api.open(str(path), repo=str(root), rev=v.commit, mode="rb") as src:
                data = src.read()
        except Exception as exc:  # dvc raises many types for a missing cache entry or remote
            raise RegistryError(f"{ARTIFACT}@{v.version}: cannot fetch {path} at {v.commit[:10]} "
                                f"({first_line(exc)}); `dvc pull` it first") from None
        from stages.core.io import atomic_path

        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
    log.info("%s@%s (%s): %s", ARTIFACT, v.version, ", ".join(v.stages) or "no stage", dest)
    return dest
