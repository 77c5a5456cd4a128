"""What a worker runs on: the device's name and memory, and the check of ``--gpus``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import InvalidValue


class DeviceError(InvalidValue):
    """A device that is not there (no CUDA, or a GPU index torch does not see)."""


def check_gpus(gpus: Sequence[int], text: str | None = None) -> int:
    """Check that torch sees CUDA and every index of ``gpus``; return the device count.
    Raises :class:`DeviceError` with a one-line message."""
    import torch

    shown = text if text is not None else ",".join(str(g) for g in gpus)
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU build)"
        raise DeviceError(f"--gpus {shown!r} is invalid: torch {torch.__version__} sees no CUDA "
                          f"device here (its CUDA: {build}); run CPU workers with --procs N")
    count = torch.cuda.device_count()
    missing = [g for g in gpus if not 0 <= g < count]
    if missing:
        raise DeviceError(f"--gpus {shown!r} is invalid: GPU {missing[0]} does not exist here "
                          f"(torch sees {count}: 0 to {count - 1}"
                          + (f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
                             if os.environ.get("CUDA_VISIBLE_DEVICES") else "") + ")")
    return count


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _ram_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return None


def device_info(device: str) -> tuple[str, int | None]:
    """(name, memory in MiB) of this process's device: ``cuda:N`` is the process's first
    visible GPU (workers set ``CUDA_VISIBLE_DEVICES=N``), ``cpu`` the processor and its RAM."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return props.name, int(props.total_memory // 2**20)
        return "no CUDA device visible", None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_name()} ({cores} cores)", _ram_mb()


__all__ = ["DeviceError", "check_gpus", "device_info"]
