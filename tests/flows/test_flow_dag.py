"""flows/dag.py: the DAG and the stage fingerprints, read through DVC's API on real repos."""

from __future__ import annotations

from flows.dag import checkout_stage, metrics_paths, read_dag, stage_states
from tests.conftest import make_pipeline_repo, run_cmd
from tests.flows.conftest import set_param


def test_toy_dag_in_dependency_order(toy_repo):
    nodes = read_dag(toy_repo)
    assert [n.name for n in nodes] == ["a", "b", "c", "d"]
    assert {n.name: n.upstream for n in nodes} == {"a": (), "b": ("a",), "c": ("b",), "d": ("a",)}


def test_project_dag_every_stage_after_its_upstream(tmp_path):
    """The real dvc.yaml, whatever stages it has today: generate first, upstream always earlier."""
    repo = make_pipeline_repo(tmp_path / "project")
    nodes = read_dag(repo)
    names = [n.name for n in nodes]
    assert names[0] == "generate"
    for i, node in enumerate(nodes):
        assert set(node.upstream) <= set(names[:i]), node


def test_a_dvc_added_input_file_is_data_not_a_stage(tmp_path):
    """The README's way to bring a large user file: `dvc add data/raw/x.csv`. Its .dvc stage is
    upstream of generate in DVC's graph, but it is not a node the flow runs."""
    repo = make_pipeline_repo(tmp_path / "project")
    (repo / "data/raw/houses.csv").write_text("area,price\n1,2\n3,4\n")
    run_cmd(["dvc", "add", "data/raw/houses.csv"], repo)
    nodes = read_dag(repo)
    assert nodes[0].name == "generate" and nodes[0].upstream == ()
    assert not any(".dvc" in n.name for n in nodes)
    assert stage_states(repo).keys() == {n.name for n in nodes}


def test_states_follow_dvc_status(toy_repo):
    before = stage_states(toy_repo)
    assert not any(s.up_to_date for s in before.values())  # never run: no dvc.lock

    run_cmd(["dvc", "repro"], toy_repo)
    fresh = stage_states(toy_repo)
    assert all(s.up_to_date for s in fresh.values())
    assert stage_states(toy_repo) == fresh  # stable: same workspace, same fingerprints

    set_param(toy_repo, "b", 20)
    changed = stage_states(toy_repo)
    assert not changed["b"].up_to_date and not changed["b"].inputs_match_lock
    assert changed["b"].fingerprint != fresh["b"].fingerprint
    # c reads b's output, which has not changed yet: DVC sees it up to date until b re-runs
    assert {n for n, s in changed.items() if s.up_to_date} == {"a", "c", "d"}
    assert changed["a"].fingerprint == fresh["a"].fingerprint


def test_missing_out_is_restorable_and_checkout_restores_it(toy_repo):
    run_cmd(["dvc", "repro"], toy_repo)
    fresh = stage_states(toy_repo)["d"]
    content = (toy_repo / "out/d.json").read_text()
    (toy_repo / "out/d.json").unlink()

    missing = stage_states(toy_repo)["d"]
    assert missing.outs_status == {"out/d.json": "deleted"}
    assert missing.restorable and not missing.up_to_date
    assert missing.fingerprint == fresh.fingerprint  # the key does not change; the out is restored

    checkout_stage(toy_repo, "d")
    assert (toy_repo / "out/d.json").read_text() == content
    assert stage_states(toy_repo)["d"] == fresh

    # c's metrics file is `cache: false`: if it goes missing, only a re-run brings it back
    (toy_repo / "metrics/c.json").unlink()
    state = stage_states(toy_repo)["c"]
    assert state.outs_status == {"metrics/c.json": "deleted"}
    assert not state.up_to_date


def test_metrics_paths(toy_repo):
    assert metrics_paths(toy_repo) == ["metrics/c.json"]
