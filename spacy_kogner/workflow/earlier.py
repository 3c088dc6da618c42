"""Summaries committed by earlier sessions, merged into a study's new summary, and what a finished
run's own files say about how it was started.

Run folders (models, logs) stay out of git, so a study spread over several sessions is summarised
from the runs finished here plus the committed summary's entries for the runs that were not redone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config, require


def read_earlier(path: str, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of an earlier summary at ``path`` ("" = none: ``{}``); ``what`` names the
    file kind in errors ("an indomain.json"), ``keys`` the entries it must hold as objects. A
    missing file, a file that is not JSON or one of another shape is a ``ConfigError`` naming it."""
    if not path:
        return {}
    require(Path(path).is_file(), f"[paths] earlier: no summary at {path}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"[paths] earlier: {path} is not JSON ({err})") from err
    require(
        isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in keys),
        f"[paths] earlier: {path} is not {what}",
    )
    return data


def run_started_from(run: Path) -> str:
    """What a student run started from (its ``config.cfg`` paths.init_model; "default" = the shipped
    encoder, a fresh span model), so a continued or fine-tuned run is never read as a fresh one."""
    cfg = run / "config.cfg"
    return str(load_config(cfg)["paths"].get("init_model", "default")) if cfg.is_file() else "default"
