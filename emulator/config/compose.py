"""Compose the app's config with Hydra's compose API (tests, scripts, CLI pre-validation).

Hydra's own errors (unknown group option, misspelt key, wrong type) span several lines; here they
become one :class:`ConfigError` line naming the key and the value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from emulator.catalogue import options
from emulator.config.schema import register
from emulator.paths import config_dir
from emulator.spec import ConfigError

CONFIG_NAME = "emulate"
VERSION_BASE = "1.3"


def compose_config(overrides: Sequence[str] = (), config_name: str = CONFIG_NAME) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with ``overrides`` (raises ConfigError on bad input)."""
    register()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=VERSION_BASE):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise hydra_error(exc, overrides) from None


_MISSING_OPTION = re.compile(r"Could not find '(?P<group>[\w/]+)/(?P<name>[^']+)'")
_FULL_KEY = re.compile(r"full_key: (?P<key>[\w.\[\]]+)")
_OVERRIDE = re.compile(
    r"(?:Could not override|Error merging override) '?(?P<key>[\w.\[\]]+?)(?:=(?P<value>.*?))?'?\.?$", re.MULTILINE
)


def _messages(exc: BaseException) -> list[str]:
    """Messages of an exception and its causes, outermost first."""
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 8:
        out.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return out


def hydra_error(exc: Exception, overrides: Sequence[str] = ()) -> ConfigError:
    """Turn a Hydra/OmegaConf exception into one line: key, value, what is allowed."""
    texts = _messages(exc)
    text = "\n".join(texts)
    m = _MISSING_OPTION.search(text)
    if m:
        group = m.group("group")
        try:
            allowed = ", ".join(options(group))
        except OSError:
            allowed = "see configs/"
        return ConfigError(group, m.group("name"), f"unknown {group}; choose one of {allowed}")
    key_m = _FULL_KEY.search(text)
    ov_m = _OVERRIDE.search(text)
    key = key_m.group("key") if key_m else (ov_m.group("key") if ov_m else "config")
    value = _override_value(key, overrides)
    if value is None and ov_m and ov_m.group("value") is not None:
        value = ov_m.group("value")
    shown = value if value is not None else "?"
    if "not in" in text or "Could not override" in text:
        return ConfigError(key, shown, "unknown key (misspelt?)")
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if "could not be converted" in line or "not a valid" in line or "Invalid value" in line:
            return ConfigError(key, shown, line.split(" of type ")[-1] if " of type " in line else line)
    first = next((t.strip().splitlines()[0] for t in texts if t.strip()), type(exc).__name__)
    return ConfigError(key, shown, first)


def _override_value(key: str, overrides: Sequence[str]) -> str | None:
    for ov in overrides:
        name, _, value = ov.lstrip("+~").partition("=")
        if name == key:
            return value
    return None
