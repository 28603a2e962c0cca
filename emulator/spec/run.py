"""Run settings: how many steps to emulate, the seed, the array backend, the batch size of the stream."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_non_negative

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    steps: int = 0
    """Steps to emulate over the fleet (0: the nominal analysis only)."""
    seed: int = 0
    backend: str = "auto"
    progress: bool = True
    trace: bool = True
    """Write trace.json: one nominal step as a Chrome trace / Perfetto timeline (a lane per pipeline stage)."""
    steps_per_batch: int = 0
    """Steps the engine evaluates per array call and appends to the Arrow files at once (0: automatic)."""

    def __post_init__(self) -> None:
        require_non_negative(self.steps, "run.steps")
        require_non_negative(self.seed, "run.seed")
        require(self.steps_per_batch >= 0, "run.steps_per_batch", self.steps_per_batch, "must be >= 0 (0: automatic)")
        require(self.backend in BACKENDS, "run.backend", self.backend, f"must be one of {', '.join(BACKENDS)}")
