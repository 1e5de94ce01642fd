"""Expected failures and the entry-point wrapper that reports them without a traceback.

Every error a user can cause (bad params, bad data, a diverging run, a failed check) is a
`FitlineError`: the stage entry points print its one-line message to stderr and exit non-zero.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class FitlineError(Exception):
    """An expected failure with a one-line, user-facing message."""

    exit_code = 1


class ParamsError(FitlineError):
    """params.yaml is malformed, has an unknown key, a bad value or an inconsistent combination."""


class DataError(FitlineError):
    """Input data is missing, unreadable or does not fit what a stage needs."""


class ValidationFailed(FitlineError):
    """Data validation found failed expectations."""


class TrainingDiverged(FitlineError):
    """The training loss became NaN or infinite."""


class ExportError(FitlineError):
    """ONNX export, parity or the quantisation budget failed."""


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type name
    when it has no message: library errors run to many lines, a fitline message is one."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]


def run_main(main: Callable[[], object], name: str) -> None:
    """Run a stage's `main()`; report a FitlineError as `fitline <name>: error: ...` and exit."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    try:
        main()
    except FitlineError as exc:
        print(f"fitline {name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"fitline {name}: interrupted", file=sys.stderr)
        sys.exit(130)
