"""The fitline-monitor flow and deployment: every batch in a folder, an artifact each, Failed on drift."""

from __future__ import annotations

import importlib
import shutil

import pandas as pd
import yaml

from stages.core.contracts import DATA_DIR
from tests.conftest import ROOT
from tests.serving.test_monitor import workspace  # noqa: F401  (the fixture: data and an exported model)


def _incoming(ws, tmp_path, batches: dict[str, pd.DataFrame]):
    root = tmp_path / "ws"
    shutil.copytree(ws, root)
    (root / "data" / "incoming").mkdir(parents=True)
    for name, df in batches.items():
        df.to_csv(root / "data" / "incoming" / f"{name}.csv", index=False)
    return root


def test_the_flow_fails_on_a_drifted_batch_and_records_each_report(workspace, tmp_path, prefect_server):  # noqa: F811
    from prefect.client.orchestration import get_client

    from flows.monitor import monitor_incoming

    test = pd.read_parquet(workspace / DATA_DIR / "test.parquet")
    root = _incoming(workspace, tmp_path, {"monday": test, "tuesday": test.assign(x0=test["x0"] + 3.0)})
    state = monitor_incoming(root=str(root), return_state=True)
    assert state.is_failed() and "1 of 2 batch(es) failed the checks: tuesday.csv (drift or invalid data)" in state.message
    assert (root / "reports" / "monitor" / "monday.json").exists() and (root / "reports" / "monitor" / "tuesday.json").exists()
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    keys = {a.key for a in artifact}
    assert {"fitline-monitor-monday", "fitline-monitor-tuesday"} <= keys

    (root / "data" / "incoming" / "tuesday.csv").unlink()
    assert monitor_incoming(root=str(root), return_state=True).is_completed()


def test_prefect_yaml_deploys_the_monitor_flow():
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    monitor = deployments["fitline-monitor"]
    module, name = monitor["entrypoint"].split(":")
    flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    assert flow.name == "fitline-monitor" and monitor["parameters"]["folder"] == "data/incoming"
    assert monitor["schedules"][0]["cron"] == "0 * * * *"
