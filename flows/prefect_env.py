"""Environment defaults of the processes that run fitline's flows, set when this module is
imported. Prefect reads its settings once, on its first import: a flow module imports this
module before prefect (`import flows.prefect_env  # noqa: F401` as its first import).

Only defaults: a value already in the environment (or chosen by the user) is kept. Nothing
here imports prefect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFECT_DEFAULTS = {
    # no network here: the server's telemetry calls would fail
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # the temporary server of a first run migrates a fresh SQLite database, which on a busy
    # small machine takes longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def set_defaults(defaults: Mapping[str, str]) -> None:
    """Set each variable that the environment does not hold yet."""
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


set_defaults(PREFECT_DEFAULTS)
