"""What importing a flow module does to the process: Prefect's environment defaults are set
before prefect reads its settings, the sweep's OpenMP default before any OpenMP runtime loads,
and logging is left alone (the pipeline's log filters are installed when a run starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, subprocess_env

# run in a fresh interpreter: this test session has long since imported prefect and the flows
PROBE = r"""
import json, logging, sys
import flows.compare  # first: it used to import prefect before the module that set the env
import flows.pipeline as pipeline
from prefect.settings import get_current_settings

settings = get_current_settings()
maps = open("/proc/self/maps").read()
filters = {n: len(logging.getLogger(n).filters) for n in pipeline.RUN_LOGGERS}
pipeline.install_log_filters()
pipeline.install_log_filters()
print(json.dumps({
    "startup_timeout": settings.server.ephemeral.startup_timeout_seconds,
    "analytics": settings.server.analytics_enabled,
    "omp_wait_policy": __import__("os").environ.get("OMP_WAIT_POLICY"),
    "torch_loaded": "torch" in sys.modules,
    "openmp_loaded": any(lib in maps for lib in ("libgomp", "libiomp", "libomp.so")),
    "filters_after_import": filters,
    "filters_after_install": {n: len(logging.getLogger(n).filters) for n in pipeline.RUN_LOGGERS},
}))
"""

DEFAULTED = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED",
             "DO_NOT_TRACK", "OMP_WAIT_POLICY")


def test_importing_the_flows_sets_env_defaults_first_and_installs_no_log_filter(tmp_path):
    env = {k: v for k, v in subprocess_env().items() if k not in DEFAULTED}
    env["PREFECT_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # prefect saw the defaults: they were set before it was first imported
    assert (seen["startup_timeout"], seen["analytics"]) == (120, False)
    # OpenMP reads its wait policy when its runtime loads (with torch): the sweep's default is
    # in place and nothing has loaded it yet
    assert seen["omp_wait_policy"] == "PASSIVE"
    assert not seen["torch_loaded"] and not seen["openmp_loaded"]
    assert seen["filters_after_import"] == {"prefect.task_runs": 0, "prefect.flow_runs": 0}
    assert seen["filters_after_install"] == {"prefect.task_runs": 1, "prefect.flow_runs": 1}


def test_env_defaults_keep_what_the_environment_holds(monkeypatch):
    from flows.prefect_env import set_defaults

    monkeypatch.setenv("FITLINE_TEST_CHOSEN", "mine")
    monkeypatch.delenv("FITLINE_TEST_UNSET", raising=False)
    set_defaults({"FITLINE_TEST_CHOSEN": "default", "FITLINE_TEST_UNSET": "default"})
    assert (os.environ["FITLINE_TEST_CHOSEN"], os.environ["FITLINE_TEST_UNSET"]) == ("mine", "default")
