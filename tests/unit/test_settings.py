import os
import subprocess
import sys
from dataclasses import fields

import pytest

from mediator.settings import SANDBOX_PASSWORD, Settings, SettingsError, load_settings


def test_defaults_run_standalone_on_the_sandbox():
    s = load_settings({})
    assert s.uses_sandbox
    assert (s.mediator_host, s.mediator_port) == ("0.0.0.0", 8550)
    assert s.openimis_verify_tls is True
    assert s.public_base_url == "http://localhost:8550/fhir"


def test_environment_overrides_defaults(settings):
    assert settings.openimis_fhir_base == "https://imis.example.org/api/api_fhir_r4/"
    assert settings.public_base_url == "https://hie.example.org/openimis/fhir"
    assert not settings.uses_sandbox


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://imis.example.org", "https://imis.example.org/api/api_fhir_r4/"),
        ("https://imis.example.org/", "https://imis.example.org/api/api_fhir_r4/"),
        ("https://imis.example.org/api/api_fhir_r4/", "https://imis.example.org/api/api_fhir_r4/"),
        ("https://imis.example.org/api/api_fhir_r4", "https://imis.example.org/api/api_fhir_r4/"),
        ("https://hie.example.org/imis/api/api_fhir_r4/", "https://hie.example.org/imis/api/api_fhir_r4/"),
        ("https://hie.example.org/imis", "https://hie.example.org/imis/api/api_fhir_r4/"),
    ],
)
def test_an_openimis_url_given_with_the_fhir_path_is_not_doubled(url, base):
    env = {"OPENIMIS_URL": url, "OPENIMIS_USERNAME": "Admin", "OPENIMIS_PASSWORD": "x"}
    assert load_settings(env).openimis_fhir_base == base


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MEDIATOR_PORT": "eighty"}, "MEDIATOR_PORT"),
        ({"MEDIATOR_PORT": "70000"}, "MEDIATOR_PORT"),
        ({"OPENIMIS_VERIFY_TLS": "maybe"}, "OPENIMIS_VERIFY_TLS"),
        ({"OPENIMIS_URL": "imis.example.org"}, "OPENIMIS_URL"),
        ({"OPENIMIS_CA_BUNDLE": "/nonexistent/ca.pem"}, "OPENIMIS_CA_BUNDLE"),
        ({"OPENIMIS_READ_TIMEOUT": "0"}, "OPENIMIS_READ_TIMEOUT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_invalid_setting_is_named(env, named):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert str(err.value).startswith(named + ":")
    assert "\n" not in str(err.value)


def test_password_never_shows_in_repr(settings):
    assert "s3cret-pass" not in repr(settings)
    assert settings.openimis_password.reveal() == "s3cret-pass"


def test_the_claim_store_url_is_a_secret_and_must_be_postgresql():
    url = "postgresql://mediator:db-pass-1@db.example.org:5432/claims"
    settings = load_settings({"CLAIM_STORE_URL": url})
    assert settings.claim_store_url.reveal() == url and "db-pass-1" not in repr(settings)
    shown = subprocess.run(
        [sys.executable, "-m", "mediator", "check-config"],
        env={**os.environ, "CLAIM_STORE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        shown.returncode == 0 and "CLAIM_STORE_URL='***'" in shown.stdout and "db-pass-1" not in shown.stdout
    )
    with pytest.raises(SettingsError, match="CLAIM_STORE_URL"):
        load_settings({"CLAIM_STORE_URL": "mysql://x:y@h/db"})


def test_invalid_setting_stops_the_start_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "mediator", "check-config"],
        env={"MEDIATOR_PORT": "nope", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "openimis-mediator: invalid setting: MEDIATOR_PORT: 'nope' is not a valid int"
    )


def test_console_overrides_are_validated(settings):
    changed = settings.with_overrides({"openimis_read_timeout": "12.5"})
    assert changed.openimis_read_timeout == 12.5
    with pytest.raises(SettingsError, match="OPENIMIS_READ_TIMEOUT"):
        settings.with_overrides({"openimis_read_timeout": "-1"})


def test_every_secret_can_be_read_from_a_file(tmp_path):
    (tmp_path / "openimis").write_text("from-a-secret\n")
    (tmp_path / "openhim").write_text("core-pass")
    s = load_settings(
        {
            "OPENIMIS_PASSWORD_FILE": str(tmp_path / "openimis"),
            "OPENHIM_API_URL": "https://openhim.example.org:8080",
            "OPENHIM_PASSWORD_FILE": str(tmp_path / "openhim"),
        }
    )
    assert s.openimis_password.reveal() == "from-a-secret"  # without the file's last newline
    assert s.openhim_password.reveal() == "core-pass"
    secrets = {f.name for f in fields(Settings) if f.type == "Secret"}
    assert secrets == {"openimis_password", "openhim_password"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENIMIS_PASSWORD_FILE": "/nonexistent/pw"},
            "OPENIMIS_PASSWORD_FILE: cannot read /nonexistent/pw",
        ),
        (
            {"OPENIMIS_PASSWORD": "x", "OPENIMIS_PASSWORD_FILE": "/etc/hostname"},
            "OPENIMIS_PASSWORD: set it or",
        ),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_named(env, message):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("url", ["https://imis.example.org", "http://10.0.0.5:8000", "http://[2001:db8::1]"])
def test_the_demo_password_is_refused_towards_a_real_server(url):
    with pytest.raises(SettingsError) as err:
        load_settings({"OPENIMIS_URL": url})
    assert str(err.value).startswith("OPENIMIS_PASSWORD: the demo default is refused for OPENIMIS_URL")
    assert SANDBOX_PASSWORD not in str(err.value)
    assert load_settings({"OPENIMIS_URL": url, "OPENIMIS_PASSWORD": "real"}).openimis_url == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8551", "http://localhost:8000", "http://[::1]:8000"])
def test_the_demo_password_is_fine_on_this_host(url):
    assert load_settings({"OPENIMIS_URL": url}).openimis_password.reveal() == SANDBOX_PASSWORD
