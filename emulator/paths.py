"""Where the shipped YAML lives: inside the package in a wheel, at the repository root in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"none of {', '.join(str(p) for p in candidates)} exists")


def config_dir() -> Path:
    """The ``configs/`` tree (model/, gpu/, cluster/, ...)."""
    return _first_existing(_PACKAGE / "configs", _PACKAGE.parent / "configs")


def validation_dir() -> Path:
    """Published measurements used by the validation script and tests."""
    return _first_existing(_PACKAGE / "validation_data", _PACKAGE.parent / "validation")
