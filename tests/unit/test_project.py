"""Project-level promises: documented settings, matching versions."""

import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import yaml

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


def test_compose_file_starts_replicas_with_settings_the_mediator_knows():
    """No Docker here: what can be checked without it is that every variable given is a setting."""
    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    known = {f.name.upper() for f in fields(Settings)}
    replicas = [s for name, s in compose["services"].items() if name.startswith("mediator-")]
    assert len(replicas) == 2
    for replica in replicas:
        for variable in replica["environment"]:
            assert variable.removesuffix("_FILE") in known, variable
        assert "CLAIM_STORE_URL_FILE" in replica["environment"]
    for secret in compose["secrets"].values():
        assert (root / secret["file"]).is_file()
