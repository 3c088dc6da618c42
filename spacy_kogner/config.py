"""One config system: confection ``.cfg`` files in ``configs/``, overridden from the CLI.

Every command that trains or builds something reads its hyperparameters from a config file and
accepts ``--section.key value`` overrides (spaCy's own syntax, parsed by spaCy's own helper), so
project vars and CLI flags change values without any number living in code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confection import Config


class ConfigError(ValueError):
    """A config file or override that cannot be used, with a message that says why."""


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ``--a.b value`` pairs the way ``spacy train`` does."""
    from spacy.cli._util import parse_config_overrides

    try:
        return parse_config_overrides(list(args))
    except SystemExit as err:  # spaCy's helper exits on malformed overrides
        raise ConfigError(f"Malformed config overrides: {' '.join(args)}") from err


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a ``.cfg`` file with overrides; unknown override sections fail clearly."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file not found: {path}")
    overrides = overrides or {}
    cfg = Config().from_disk(path, interpolate=False)
    for key in overrides:
        section, _, name = key.rpartition(".")
        node: Any = cfg
        for part in section.split(".") if section else []:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"Unknown config section '{section}' in override '--{key}' for {path}")
            node = node[part]
        if not isinstance(node, dict) or name not in node:
            raise ConfigError(f"Unknown config key '{key}' (override) for {path}")
    return Config().from_disk(path, overrides=overrides, interpolate=True)


def check_known_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
    """Reject keys a reader does not use: a typo must not silently fall back to a default."""
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in [{where}]; allowed: {sorted(allowed)}")
