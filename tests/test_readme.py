"""README.md says what is true: the component table lists every setting with its default, and
every file it cites exists."""

from __future__ import annotations

import dataclasses
import re

from conftest import REPO

from spacy_kogner.pipeline.component import KognerSettings

README = (REPO / "README.md").read_text(encoding="utf8")


def _default(field: dataclasses.Field) -> object:
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]


def test_the_component_table_lists_every_setting_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", README, flags=re.M))
    for field in dataclasses.fields(KognerSettings):
        assert field.name in rows, f"README's component table lacks `{field.name}`"
        default = _default(field)
        shown = {True: "true", False: "false"}.get(default, default) if isinstance(default, bool) else default
        expected = f'"{shown}"' if isinstance(shown, str) and not isinstance(default, bool) else str(shown)
        assert rows[field.name] == expected, f"`{field.name}`: README says {rows[field.name]}, code says {expected}"


def test_every_file_the_readme_cites_exists():
    # repository paths, not the tails of URLs (``…/weasel/tree/main/docs/cli.md``)
    pattern = r"(?<![\w/.-])((?:docs|configs|scripts|tests|spacy_kogner)/[A-Za-z0-9_./-]+\.(?:md|json|cfg|png|py|sh))"
    cited = set(re.findall(pattern, README))
    missing = sorted(p for p in cited if not (REPO / p).exists())
    assert not missing, f"README cites files that are not in the repository: {missing}"
