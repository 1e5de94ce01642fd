"""`fitline promote` / `fitline models` / a stage's model, through GTO on a real git + DVC repo."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages.tools.registry import (
    GateRefused,
    RegistryError,
    fetch_model,
    promote,
    resolve,
    versions,
    workspace_problems,
)
from tests.conftest import make_pipeline_repo, run_cmd

PARAMS = """\
data: {kind: linear, n_samples: 1500, n_features: 4, n_informative: 3, seed: 5}
train: {hidden: [16], epochs: 40, batch_size: 64}
export: {latency_repeats: 2}
gate:
  rules: [eval.test.r2 >= 0.5]
  regressions: [{metric: eval.test.r2, better: higher, abs_tol: 0.02, when: regression}]
"""


def _commit(repo, message):
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-q", "-m", message], repo)


def _tags(repo) -> list[str]:
    return run_cmd(["git", "tag", "-l"], repo).stdout.split()


def test_a_dirty_workspace_cannot_be_promoted(tmp_path):
    repo = make_pipeline_repo(tmp_path / "repo", PARAMS)
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n# edited\n")
    problems = workspace_problems(repo)
    assert problems and problems[0].startswith("uncommitted changes (1 file(s))")
    with pytest.raises(RegistryError, match="cannot promote: uncommitted changes"):
        promote(repo)
    assert _tags(repo) == []
    with pytest.raises(RegistryError, match=r"no version of model holds stage 'prod' \(`fitline promote --stage prod`\)"):
        resolve(repo, stage="prod")


@pytest.mark.slow
def test_promote_tags_the_good_run_refuses_a_worse_one_and_serves_the_stage(tmp_path):
    repo = make_pipeline_repo(tmp_path / "repo", PARAMS)
    run_cmd(["dvc", "repro"], repo)
    _commit(repo, "a good run")
    with pytest.raises(RegistryError, match="does not match dvc.lock"):
        (repo / "metrics" / "eval.json").write_text("{}")
        promote(repo)
    run_cmd(["git", "checkout", "--", "metrics/eval.json"], repo)
    good_onnx = (repo / "models" / "model.onnx").read_bytes()

    version, result = promote(repo, stage="prod")
    assert version == "v0.0.1" and result.exit_code == 0
    assert sorted(_tags(repo)) == ["model#prod#1", "model@v0.0.1"]
    message = run_cmd(["git", "tag", "-l", "-n1", "model@v0.0.1"], repo).stdout
    assert "fitline: test r2 0." in message

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=1)  # a much worse model
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_cmd(["dvc", "repro"], repo)
    _commit(repo, "a worse run")
    with pytest.raises(GateRefused, match=r"refused HEAD against model@v0.0.1 \(prod\); nothing tagged"):
        promote(repo, stage="prod")
    assert sorted(_tags(repo)) == ["model#prod#1", "model@v0.0.1"]

    (listed,) = versions(repo)
    assert listed.version == "v0.0.1" and listed.stages == ("prod",) and listed.metrics["r2"] > 0.5
    assert fetch_model(repo, stage="prod").read_bytes() == good_onnx
    assert fetch_model(repo, version="0.0.1").read_bytes() == good_onnx
    fitline = str(Path(sys.executable).parent / "fitline")
    models = run_cmd([fitline, "models"], repo)
    assert re.match(r"v0\.0\.1\s+prod\s+[0-9a-f]{10}", models.stdout) and "r2 0." in models.stdout
    pd.read_parquet(repo / "data" / "test.parquet").to_csv(repo / "rows.csv", index=False)
    run_cmd([fitline, "predict", "--stage", "prod", "--input", "rows.csv", "--output", "p.csv"], repo)
    run_cmd([fitline, "predict", "--model", str(repo / ".dvc/tmp/fitline-models/v0.0.1/model.onnx"),
             "--input", "rows.csv", "--output", "q.csv"], repo)
    assert (repo / "p.csv").read_text() == (repo / "q.csv").read_text()
    refused = run_cmd([fitline, "promote", "--stage", "prod"], repo, check=False)
    assert refused.returncode == 1 and "nothing tagged" in refused.stderr
