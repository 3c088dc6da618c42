"""One config system: confection ``.cfg`` files in ``configs/``, profiles, CLI overrides, sections.

* Every command that trains or builds something reads its hyperparameters from a config file and
  accepts ``--section.key value`` overrides (spaCy's own syntax, parsed by spaCy's own helper), so
  project vars and CLI flags change values without any number living in code.
* A **profile** (smoke, quick, full, paper) is a small override file,
  ``configs/profiles/<profile>/<step>.cfg``, holding only the values it changes; it is merged over
  the step's base config ``configs/<step>.cfg``. A profile key the base lacks is an error, so a
  profile can never drift from its base.
* Every section a reader consumes is declared once, as a dataclass, and read with
  ``read_section``: unknown keys, missing keys and wrong types fail with the section's name before
  any work starts. That is the only way config keys are validated.

This module imports nothing else from the package; everything else may import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from confection import Config

PROFILES_DIR = "profiles"
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used, with a message that says why."""


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ``--a.b value`` pairs the way ``spacy train`` does."""
    from spacy.cli._util import parse_config_overrides

    try:
        return parse_config_overrides(list(args))
    except SystemExit as err:  # spaCy's helper exits on malformed overrides
        raise ConfigError(f"Malformed config overrides: {' '.join(args)}") from err


def resolve_config_path(path: str | Path) -> Path:
    """Find a config by its repo-relative name (``configs/labels.cfg``) also when a command runs
    from another working directory of a source checkout."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    packaged = Path(__file__).resolve().parents[1] / path
    return packaged if packaged.exists() else path


def profile_path(base: str | Path, profile: str) -> Path:
    """``configs/distill.cfg`` + ``quick`` → ``configs/profiles/quick/distill.cfg``."""
    base = Path(base)
    return base.parent / PROFILES_DIR / profile / base.name


def _check_keys_exist(cfg: dict[str, Any], keys: list[str], where: str, what: str) -> None:
    for key in keys:
        section, _, name = key.rpartition(".")
        node: Any = cfg
        for part in section.split(".") if section else []:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"Unknown config section '{section}' in {what} '{key}' for {where}")
            node = node[part]
        if not isinstance(node, dict) or name not in node:
            raise ConfigError(f"Unknown config key '{key}' ({what}) for {where}")


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, profile: str | None = None) -> Config:
    """Load a ``.cfg`` file, merge the profile's override file, then the CLI overrides.

    Order: base file < profile file < ``overrides``. Unknown keys in the profile file or in the
    overrides fail clearly (they would otherwise be silently ignored or silently added)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file not found: {path}")
    raw = Config().from_disk(path, interpolate=False)
    merged: dict[str, Any] = {}
    prof = profile_path(path, profile) if profile else None
    if prof is not None and not prof.parent.is_dir():
        raise ConfigError(f"Unknown profile {profile!r}: no folder {prof.parent}")
    if prof is not None and prof.is_file():  # a profile without a file for this step uses the base
        prof_values = _flatten(Config().from_disk(prof, interpolate=False))
        _check_keys_exist(raw, list(prof_values), str(path), f"profile {prof}")
        merged.update(prof_values)
    overrides = dict(overrides or {})
    _check_keys_exist(raw, list(overrides), str(path), "override")
    merged.update(overrides)
    return Config().from_disk(path, overrides=merged, interpolate=True)


# ------------------------------------------------------------------------------ sections


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a field annotation (the few shapes config values take)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def read_section(cls: type[T], section: dict[str, Any] | None, where: str) -> T:
    """Build the dataclass ``cls`` from a config section: the one place keys are validated.

    Unknown keys, missing keys (fields without a default) and values of the wrong type raise a
    ``ConfigError`` naming ``[where]`` and the key; the dataclass's own ``__post_init__`` checks
    value ranges. A typo must never silently fall back to a default."""
    if section is None:
        raise ConfigError(f"Missing config section [{where}]")
    if not isinstance(section, dict):
        raise ConfigError(f"[{where}] must be a section, got {section!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in [{where}]; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in section:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"[{where}] is missing the key '{name}'")
            continue
        value = section[name]
        if isinstance(value, tuple):
            value = list(value)
        if not _type_ok(value, hints[name]):
            raise ConfigError(f"[{where}] {name} = {value!r} has the wrong type: expected {_type_name(hints[name])}")
        if hints[name] is float and isinstance(value, int):
            value = float(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"[{where}] {err}") from err


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


class Section:
    """Mixin for a section dataclass read from one config file: set ``SECTION`` (its name) and
    ``DEFAULT_CONFIG`` (the file it usually lives in)."""

    SECTION: ClassVar[str]
    DEFAULT_CONFIG: ClassVar[str]

    @classmethod
    def from_section(cls: type[S], section: dict[str, Any]) -> S:
        """Validate the section (``read_section``)."""
        return read_section(cls, section, cls.SECTION)  # type: ignore[attr-defined]

    @classmethod
    def from_config(cls: type[S], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> S:
        """Read the section from a config file (default: ``DEFAULT_CONFIG``)."""
        cfg = load_config(resolve_config_path(path or cls.DEFAULT_CONFIG), overrides)  # type: ignore[attr-defined]
        return cls.from_section(cfg[cls.SECTION])  # type: ignore[attr-defined]


S = TypeVar("S", bound=Section)


def require(condition: bool, message: str) -> None:
    """Value checks inside a section dataclass's ``__post_init__``."""
    if not condition:
        raise ConfigError(message)
