"""Prefect settings for a flow run started from the command line (`fitline run`, `sweep`,
`compare`), as opposed to a deployment's run on a worker. Nothing here imports prefect at
module level."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def interactive_heartbeat(environ: Mapping[str, str] | None = None) -> int | None:
    """The heartbeat interval for a run started from the command line: none, unless chosen.

    Prefect's flow-run heartbeats feed the automation that marks a deployment's run Crashed
    when its worker vanishes; a run in the user's own terminal shows its crash there. They also
    cost a no-op run most of its time: the heartbeat thread sleeps in 1 s steps and the run
    waits for it to stop.
    A value set in the environment, or a non-default one in the Prefect profile, is kept.
    Deployment runs (`prefect deploy`, `fitline serve`) do not come through here and keep
    Prefect's setting.
    """
    from prefect.settings import get_current_settings
    from prefect.settings.models.flows import FlowsSettings

    env = os.environ if environ is None else environ
    current = get_current_settings().flows.heartbeat_frequency
    if any(name in env for name in HEARTBEAT_ENV) or current != FlowsSettings.model_fields["heartbeat_frequency"].default:
        return current
    return None


@contextlib.contextmanager
def command_line_run() -> Iterator[None]:
    """Flow runs started inside the block use `interactive_heartbeat()`."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: interactive_heartbeat()}):
        yield
