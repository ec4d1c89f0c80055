"""Project-level promises: documented settings, matching versions."""

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path

from mediator import __version__
from mediator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_has_a_default_and_one_readme_row():
    defaults = tomllib.loads((ROOT / "mediator" / "config" / "defaults.toml").read_text())
    readme = (ROOT / "README.md").read_text()
    for f in fields(Settings):
        assert f.name in defaults, f"{f.name} has no default in mediator/config/defaults.toml"
        rows = re.findall(rf"^\| `{f.name.upper()}` \|", readme, flags=re.MULTILINE)
        assert len(rows) == 1, (
            f"{f.name.upper()} must be documented exactly once in the README settings table"
        )


def test_mediator_json_version_is_the_package_version():
    config = json.loads((ROOT / "mediator" / "mediator.json").read_text())
    assert config["version"] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", config["version"])


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, flags=re.DOTALL).group(1).splitlines()
    assert block[0].startswith("./scripts/serve")
    assert block[1].startswith("./scripts/test")
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
