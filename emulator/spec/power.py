"""Site power: GPU power by phase, overheads, facility caps and demand-response windows (SI units)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_fraction, require_non_negative


@dataclass(frozen=True, kw_only=True)
class PowerWindowSpec:
    """A demand-response event: between ``start_s`` and ``end_s`` of emulated time the site may draw ``cap_w``."""

    start_s: float
    end_s: float
    cap_w: float


@dataclass(frozen=True, kw_only=True)
class PowerSpec:
    compute_fraction_of_tdp: float
    """GPU power while computing, as a fraction of TDP."""
    comm_fraction_of_tdp: float
    """GPU power during exposed communication, as a fraction of TDP (never below idle)."""
    host_w_per_gpu: float
    """CPU hosts, memory, NICs and node overhead per GPU."""
    network_w_per_gpu: float
    """Switches and optics of the fabric per GPU."""
    pue: float
    """Power usage effectiveness: facility power / IT power (cooling, conversion)."""
    facility_cap_w: float
    """Site supply limit (0: none). Above it GPUs are power-capped and their clocks drop."""
    windows: tuple[PowerWindowSpec, ...] = ()

    def __post_init__(self) -> None:
        p = "power"
        require_fraction(self.compute_fraction_of_tdp, f"{p}.compute_fraction_of_tdp")
        require_fraction(self.comm_fraction_of_tdp, f"{p}.comm_fraction_of_tdp")
        require_non_negative(self.host_w_per_gpu, f"{p}.host_w_per_gpu")
        require_non_negative(self.network_w_per_gpu, f"{p}.network_w_per_gpu")
        require(self.pue >= 1.0, f"{p}.pue", self.pue, "must be >= 1")
        require_non_negative(self.facility_cap_w, f"{p}.facility_cap_mw")
        for i, w in enumerate(self.windows):
            require(w.end_s > w.start_s >= 0.0, f"{p}.windows[{i}]", f"{w.start_s}..{w.end_s}",
                    "needs 0 <= start_s < end_s")
            require(w.cap_w > 0.0, f"{p}.windows[{i}].cap_mw", w.cap_w / 1e6, "must be > 0")
