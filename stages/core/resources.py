"""Memory preflight: refuse a run that cannot fit before it allocates, with one line that gives
the estimate, what is available and the param to change (an allocation past the memory ends in
a traceback, or in the kernel killing the process without a word)."""

from __future__ import annotations

from stages.core.errors import ResourceError

GIB = 2**30
HEADROOM = 0.9  # leave this share of what is available for everything else in the process


def available_memory() -> int:
    """Bytes the process can still allocate: MemAvailable (Linux), else psutil's figure."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(what: str, parts: dict[str, int], remedy: str, available: int | None = None) -> None:
    """ResourceError when the estimated `parts` (name -> bytes) exceed what is available.

    `remedy` names the params that shrink the estimate, e.g. "lower train.hidden"."""
    available = available_memory() if available is None else available
    need = sum(parts.values())
    if need <= HEADROOM * available:
        return
    detail = ", ".join(f"{name} {size / GIB:.1f} GiB" for name, size in parts.items())
    raise ResourceError(f"{what} needs about {need / GIB:.1f} GiB of memory ({detail}) but "
                        f"{available / GIB:.1f} GiB is available; {remedy}")


def device_memory(device: object) -> int:
    """Free memory of `device`: the GPU's for CUDA, the host's otherwise."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()
