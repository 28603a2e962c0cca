"""Array backends: NumPy (the reference and CI's path) or CuPy (when a CUDA device really works).

This is the only module that imports CuPy. ``auto`` probes once per process (device count plus one
tiny computation, inside try/except: ``import cupy`` alone proves nothing on a machine without a
driver) and caches the answer.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from emulator.spec import ConfigError


@cache
def cupy_usable() -> bool:
    """True when CuPy imports, sees a device and can run a kernel."""
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported only here

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        probe = cupy.arange(4, dtype=cupy.uint64) * cupy.uint64(3)
        return int(probe.sum()) == 18
    except Exception:
        return False


def get_xp(name: str) -> Any:
    """The array namespace for ``run.backend`` (auto | numpy | cupy)."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_usable():
            raise ConfigError("run.backend", name, "no usable CUDA device (CuPy probe failed); use auto or numpy")
        import cupy  # noqa: PLC0415

        return cupy
    if name == "auto":
        return get_xp("cupy") if cupy_usable() else np
    raise ConfigError("run.backend", name, "must be one of auto, numpy, cupy")


def backend_name(xp: Any) -> str:
    return str(getattr(xp, "__name__", "unknown")).split(".")[0]


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of an array from any backend (one transfer)."""
    if hasattr(x, "get"):  # CuPy
        return np.asarray(x.get())
    return np.asarray(x)
