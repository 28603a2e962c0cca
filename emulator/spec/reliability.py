"""Failures, detection, restart and checkpoints (SI units: rates per second, times in seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_non_negative

COMPONENTS = ("gpu", "hbm", "nic", "host", "switch", "software")
"""Failure classes, each a Poisson process whose rate scales with what it counts (see ``per``)."""
PER = {"gpu": "gpu", "hbm": "gpu", "nic": "gpu", "host": "node", "switch": "gpu", "software": "gpu"}
"""What one rate unit counts: per GPU or per node (switch and software failures scale with the job's
GPU count, as in the Llama 3 run they were counted on)."""


@dataclass(frozen=True, kw_only=True)
class ReliabilitySpec:
    rates_per_s: dict[str, float]
    """Failure rate per counted unit (GPU or node, see :data:`PER`) per second, by component."""
    detect_s: float
    """Time from a failure to the job being stopped and diagnosed."""
    restart_s: float
    """Time to reschedule, reload the last checkpoint and get back to the same step."""
    checkpoint_write_s: float
    """Blocking time of one checkpoint write."""
    checkpoint_interval_steps: int
    """Steps between checkpoints; 0: Young's optimum ``sqrt(2 * write_s * MTBF)`` in steps."""
    enabled: bool = True

    def __post_init__(self) -> None:
        p = "reliability"
        for name, rate in self.rates_per_s.items():
            require(name in COMPONENTS, f"{p}.rates", name, f"unknown component; allowed: {', '.join(COMPONENTS)}")
            require_non_negative(rate, f"{p}.rates.{name}")
        require_non_negative(self.detect_s, f"{p}.detect_s")
        require_non_negative(self.restart_s, f"{p}.restart_s")
        require_non_negative(self.checkpoint_write_s, f"{p}.checkpoint_write_s")
        require_non_negative(self.checkpoint_interval_steps, f"{p}.checkpoint_interval_steps")
