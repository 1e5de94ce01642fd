"""Expected failures and the entry-point wrapper that reports them without a traceback.

Every error a user can cause (bad params, bad data, a diverging run, a failed check) is a
`FitlineError`: the stage entry points print its one-line message to stderr and exit non-zero.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
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


class ResourceError(FitlineError):
    """The run does not fit in the memory or the disk space there is."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> OSError | None:
    """The no-space OSError behind `exc`, if any (torch.save reports one as a RuntimeError
    whose context is the OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


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
    except MemoryError:
        print(f"fitline {name}: error: out of memory; make the data or the model smaller (see the "
              "params of this stage)", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        where = f" writing {full.filename}" if full.filename else ""
        print(f"fitline {name}: error: no space left on device{where}; free disk space and rerun "
              "(the previous outputs are kept)", file=sys.stderr)
        sys.exit(1)
