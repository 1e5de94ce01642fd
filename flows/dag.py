"""The pipeline as DVC sees it: the stage DAG from dvc.yaml and each stage's fingerprint.

Everything here goes through DVC's own API (`dvc.repo.Repo`), so dvc.yaml stays the one
source of truth for the stages and the hashes are the ones DVC itself computes (md5 of files,
`.dir` hashes of folders, served from DVC's state database when files are unchanged). Nothing
here imports prefect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.errors import FitlineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageNode:
    """One stage of dvc.yaml and the stages whose outputs it reads."""

    name: str
    upstream: tuple[str, ...]


@dataclass(frozen=True)
class StageState:
    """How a stage's workspace compares with its dvc.lock entry.

    `fingerprint` hashes the stage's cmd, its params values and its deps' content hashes as
    they are now, plus its outs' hashes recorded in dvc.lock. When the stage is up to date it
    is exactly a digest of the stage's dvc.lock entry.
    """

    name: str
    fingerprint: str
    inputs_match_lock: bool  # cmd, params and deps are what dvc.lock recorded
    outs_status: dict[str, str]  # out path -> deleted | modified | new | not in cache
    always_changed: bool = False

    @property
    def up_to_date(self) -> bool:
        """What `dvc status` says: nothing to do for this stage."""
        return self.inputs_match_lock and not self.outs_status and not self.always_changed

    @property
    def restorable(self) -> bool:
        """Inputs match dvc.lock and outs are only missing or modified, so `dvc checkout` may
        bring them back (it cannot for outs kept out of DVC's cache: those make the stage run)."""
        return (self.inputs_match_lock and not self.always_changed and bool(self.outs_status)
                and all(s in ("deleted", "modified") for s in self.outs_status.values()))


def _pipeline_stages(repo: Any) -> list[Any]:
    """Stages of the repo's dvc.yaml files (not .dvc files of `dvc add`), in file order."""
    return [s for s in repo.index.stages if getattr(s, "cmd", None)]


def stage_address(repo: Any, stage: Any) -> str:
    """How `dvc repro` run in the repo root names the stage (`name`, or `sub/dvc.yaml:name`).

    DVC's own `stage.addressing` is relative to the current directory, not to the repo."""
    rel = Path(os.path.relpath(stage.path, repo.root_dir)).as_posix()
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def stage_nodes(repo: Any) -> list[StageNode]:
    """The DAG in dependency order; independent stages keep their dvc.yaml order."""
    import networkx as nx

    stages = _pipeline_stages(repo)
    graph = repo.index.graph  # edges go from a stage to the stages it depends on
    order = {stage_address(repo, s): i for i, s in enumerate(stages)}
    # a `dvc add`-ed file (a .dvc stage) that a stage depends on is data, not a node of the DAG
    upstream = {
        stage_address(repo, s): tuple(sorted(
            (a for d in graph.successors(s) if getattr(d, "cmd", None) and (a := stage_address(repo, d)) in order),
            key=order.__getitem__))
        for s in stages
    }
    dag = nx.DiGraph()
    dag.add_nodes_from(upstream)
    dag.add_edges_from((u, name) for name, ups in upstream.items() for u in ups)
    names = nx.lexicographical_topological_sort(dag, key=order.__getitem__)
    return [StageNode(name, upstream[name]) for name in names]


def not_a_workspace(path: Path, why: str) -> FitlineError:
    return FitlineError(f"{path} is not a git + DVC workspace ({why}); run in the project root, "
                        "or create one with `git init && dvc init`")


def check_workspace(root: str | os.PathLike[str]) -> Path:
    """`root` resolved, if it is a DVC workspace (a folder with `.dvc/`); else a FitlineError.

    Checked before a flow writes anything there (its lock lives in `.dvc/tmp`), so a mistyped
    `--root` gets a one-line error instead of a `.dvc/` folder made where none belongs."""
    path = Path(root).resolve()
    if not path.is_dir():
        raise FitlineError(f"{path}: no such folder")
    if not (path / ".dvc").is_dir():
        raise not_a_workspace(path, "no .dvc/ folder")
    return path


def read_dag(root: str | os.PathLike[str]) -> list[StageNode]:
    """Stages of `root`'s dvc.yaml in an order where every stage comes after its upstream."""
    with DvcWorkspace(root) as ws:
        return ws.nodes()


def _canonical(value: Any) -> Any:
    # params read from YAML may hold tuples where dvc.lock holds lists; compare them as JSON does
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _inputs(stage: Any, current: bool) -> dict[str, Any]:
    """cmd, params values and deps hashes, from the workspace (current) or from dvc.lock."""
    from dvc.dependency import ParamsDependency

    params: dict[str, Any] = {}
    deps: dict[str, Any] = {}
    for dep in stage.deps:
        info = dep.get_hash() if current else dep.hash_info
        value = info.value if info else None
        if isinstance(dep, ParamsDependency):
            params[dep.def_path] = _canonical(value)
        else:
            deps[dep.def_path] = value
    cmd = stage.cmd if current or not stage.cmd_changed else None
    return {"cmd": cmd, "params": params, "deps": deps}


def _out_status(out: Any) -> str | None:
    if not out.exists:
        return "deleted"
    if not out.hash_info:
        return "new"
    if out.changed_checksum():
        return "modified"
    if out.use_cache and out.changed_cache():
        return "not in cache"
    return None


def _state(repo: Any, stage: Any) -> StageState:
    try:
        current = _inputs(stage, current=True)
    except Exception as exc:  # a dep or param is missing: DVC's own run will report it
        log.debug("cannot hash the inputs of %s: %s", stage.name, exc)
        current = {"error": str(exc)}
    locked = _inputs(stage, current=False)
    outs_lock = {o.def_path: o.hash_info.value if o.hash_info else None for o in stage.outs}
    outs_status = {o.def_path: st for o in stage.outs if (st := _out_status(o))}
    name = stage_address(repo, stage)
    payload = json.dumps({"stage": name, **current, "outs": outs_lock}, sort_keys=True)
    return StageState(
        name=name,
        fingerprint=hashlib.sha256(payload.encode()).hexdigest(),
        inputs_match_lock=(current == locked and not stage.cmd_changed) or bool(stage.frozen),
        outs_status=outs_status,
        always_changed=bool(stage.always_changed),
    )


class DvcWorkspace:
    """One DVC Repo on a workspace, with the stage states computed from it.

    Opening a Repo and loading dvc.yaml + dvc.lock is not free, so a flow run keeps one for
    all its stages; `invalidate()` after anything changed the workspace (a stage ran, outs
    were checked out) makes the next call read it anew.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._repo: Any = None
        self._by_name: dict[str, Any] | None = None
        self._states: dict[str, StageState] = {}

    @property
    def repo(self) -> Any:
        if self._repo is None:
            from dvc.exceptions import NotDvcRepoError
            from dvc.repo import Repo
            from dvc.scm import SCMError

            try:
                self._repo = Repo(os.fspath(self.root))
            except (NotDvcRepoError, SCMError) as exc:
                raise not_a_workspace(self.root, str(exc)) from None
        return self._repo

    def invalidate(self) -> None:
        self.close()

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
        self._repo = None
        self._by_name = None
        self._states = {}

    def __enter__(self) -> DvcWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def nodes(self) -> list[StageNode]:
        nodes = stage_nodes(self.repo)
        if not nodes:
            raise FitlineError(f"{self.root}: no dvc.yaml with stages here; nothing to run")
        return nodes

    def _stages(self) -> dict[str, Any]:
        if self._by_name is None:
            repo = self.repo
            self._by_name = {stage_address(repo, s): s for s in _pipeline_stages(repo)}
        return self._by_name

    def state(self, name: str) -> StageState:
        """One stage's state, computed once until `invalidate()`. Only that stage's deps and
        outs are hashed: an upstream's large output folder is not looked at again."""
        if name not in self._states:
            stages = self._stages()
            if name not in stages:
                raise KeyError(f"no stage {name} in dvc.yaml (stages: {', '.join(stages)})")
            self._states[name] = _state(self.repo, stages[name])
        return self._states[name]

    def states(self) -> dict[str, StageState]:
        return {name: self.state(name) for name in self._stages()}

    def checkout(self, name: str) -> None:
        """Restore a stage's outs from DVC's cache to what dvc.lock records (`dvc checkout <name>`)."""
        path, _, stage = name.rpartition(":")
        target = f"{self.root / (path or 'dvc.yaml')}:{stage}"  # DVC resolves targets from the cwd
        try:
            self.repo.checkout(targets=[target], force=True)
        finally:
            self.invalidate()

    def git_outs(self) -> list[str]:
        """Outputs the stages leave to git (`cache: false`), e.g. the committed metrics."""
        outs = {os.path.relpath(o.fs_path, self.root) for s in _pipeline_stages(self.repo) for o in s.outs
                if not o.use_cache}
        return sorted(Path(p).as_posix() for p in outs)

    def metrics_paths(self) -> list[str]:
        """Metrics files the pipeline declares: top-level `metrics:` and outs with `metric: true`."""
        from dvc.repo.metrics.show import _collect_top_level_metrics

        repo = self.repo
        paths = {os.path.relpath(p, self.root) if os.path.isabs(p) else p for p in _collect_top_level_metrics(repo)}
        paths |= {o.def_path for s in _pipeline_stages(repo) for o in s.outs if o.metric}
        return sorted(Path(p).as_posix() for p in paths)


# one-off helpers for callers that look once (each opens and closes its own Repo)


def stage_states(root: str | os.PathLike[str]) -> dict[str, StageState]:
    with DvcWorkspace(root) as ws:
        return ws.states()


def stage_state(root: str | os.PathLike[str], name: str) -> StageState:
    with DvcWorkspace(root) as ws:
        return ws.state(name)


def checkout_stage(root: str | os.PathLike[str], name: str) -> None:
    with DvcWorkspace(root) as ws:
        ws.checkout(name)


def metrics_paths(root: str | os.PathLike[str]) -> list[str]:
    with DvcWorkspace(root) as ws:
        return ws.metrics_paths()
