"""The one typed settings object of the mediator.

Values come, in increasing precedence, from `mediator/config/defaults.toml`, environment
variables of the same name in upper case, and (for console-editable settings) the OpenHIM
console. A value that does not parse stops the start with a one-line message naming the setting,
so an operator never runs on a silently-defaulted value. The configuration files are package
data, so that an installed mediator needs no checkout; `MEDIATOR_CONFIG_DIR` names another
directory holding `defaults.toml` and `gunicorn.conf.py`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: The configuration shipped in the package; `mediator.json` (the OpenHIM registration) is beside it.
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_DIR = Path(os.environ.get("MEDIATOR_CONFIG_DIR") or PACKAGE_CONFIG_DIR)
DEFAULTS_FILE = CONFIG_DIR / "defaults.toml"

#: The embedded sandbox's demo password (openIMIS's demo one too), also OPENIMIS_PASSWORD's default:
#: refused towards a real server.
SANDBOX_PASSWORD = "admin123"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: MEDIATOR_CPU_BINDING: bind each worker to one CPU when the instance owns its CPUs, always, never.
CPU_BINDINGS = ("auto", "on", "off")
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class SettingsError(ValueError):
    """A setting has a value the mediator cannot run with; the message names the setting."""


class Secret(str):
    """A string that never shows itself in a repr, a log line or an error message."""

    def __repr__(self) -> str:
        return "'***'" if self else "''"

    def reveal(self) -> str:
        return str.__str__(self)


def console(param: str) -> dict[str, Any]:
    """Field metadata: the setting may be changed live from the OpenHIM console as `param`."""
    return {"console": param}


@dataclass(frozen=True)
class Settings:
    mediator_host: str
    mediator_port: int
    mediator_public_url: str = field(metadata=console("mediatorPublicUrl"))
    mediator_workers: int
    mediator_threads: int
    mediator_cpu_binding: str
    mediator_max_body_bytes: int
    mediator_urn: str
    log_level: str = field(metadata=console("logLevel"))
    mediator_state_dir: str
    mediator_route_host: str
    mediator_route_port: int

    openimis_url: str = field(metadata=console("openimisUrl"))
    openimis_fhir_path: str = field(metadata=console("openimisFhirPath"))
    openimis_username: str = field(metadata=console("openimisUsername"))
    openimis_password: Secret = field(metadata=console("openimisPassword"))
    openimis_verify_tls: bool = field(metadata=console("openimisVerifyTls"))
    openimis_ca_bundle: str = field(metadata=console("openimisCaBundle"))
    openimis_connect_timeout: float = field(metadata=console("openimisConnectTimeout"))
    openimis_read_timeout: float = field(metadata=console("openimisReadTimeout"))
    openimis_login_retry_after: float
    openimis_pool_size: int

    sandbox_host: str
    sandbox_port: int

    openhim_api_url: str
    openhim_username: str
    openhim_password: Secret
    openhim_auth: str
    openhim_verify_tls: bool
    openhim_ca_bundle: str
    openhim_heartbeat_interval: float
    openhim_install_channels: bool

    claim_store_path: str
    #: postgresql://user:password@host:port/db: the store several replicas share (empty: SQLite).
    claim_store_url: Secret
    claim_store_pool_size: int
    claim_retention_days: float = field(metadata=console("claimRetentionDays"))
    forward_backoff_initial: float = field(metadata=console("forwardBackoffInitial"))
    forward_backoff_max: float = field(metadata=console("forwardBackoffMax"))
    forward_backoff_jitter: float = field(metadata=console("forwardBackoffJitter"))
    forward_poll_interval: float
    adjudication_poll_interval: float = field(metadata=console("adjudicationPollInterval"))

    subscription_endpoint_allowlist: str = field(metadata=console("subscriptionEndpointAllowlist"))
    notification_backoff_initial: float = field(metadata=console("notificationBackoffInitial"))
    notification_backoff_max: float = field(metadata=console("notificationBackoffMax"))
    notification_max_failures: int = field(metadata=console("notificationMaxFailures"))
    notification_timeout: float
    adjudication_follow_days: float = field(metadata=console("adjudicationFollowDays"))
    adjudication_reads_per_minute: int = field(metadata=console("adjudicationReadsPerMinute"))

    master_data_cache_enabled: bool = field(metadata=console("masterDataCacheEnabled"))
    master_data_refresh_interval: float = field(metadata=console("masterDataRefreshInterval"))
    master_data_full_refresh_interval: float = field(metadata=console("masterDataFullRefreshInterval"))

    # -- derived values -------------------------------------------------------------------

    @property
    def uses_sandbox(self) -> bool:
        return not self.openimis_url

    @property
    def openimis_fhir_base(self) -> str:
        """Absolute FHIR base of openIMIS, always ending with a slash (openIMIS needs it).

        An `OPENIMIS_URL` that already ends with the FHIR path (`https://imis.example.org/api/api_fhir_r4/`,
        what an operator copies from a browser) is taken as the base itself, never doubled.
        """
        root, path = self.openimis_url.rstrip("/"), self.openimis_fhir_path.strip("/")
        if path and urlsplit(root).path.rstrip("/").endswith("/" + path):
            return root + "/"
        return root + "/" + path + "/" if path else root + "/"

    @property
    def public_base_url(self) -> str:
        """Where clients reach the mediator's FHIR endpoints (no trailing slash)."""
        root = self.mediator_public_url or f"http://localhost:{self.mediator_port}"
        return root.rstrip("/") + "/fhir"

    @property
    def tls_verify(self) -> bool | str:
        """The value `requests` takes for `verify` towards openIMIS: a CA bundle path, or a boolean."""
        return _tls(self.openimis_verify_tls, self.openimis_ca_bundle)

    @property
    def openhim_tls_verify(self) -> bool | str:
        return _tls(self.openhim_verify_tls, self.openhim_ca_bundle)

    @property
    def claim_store_file(self) -> Path:
        return Path(self.claim_store_path or Path(self.mediator_state_dir) / "claims.sqlite3")

    @cached_property
    def replica_name(self) -> str:
        """How this instance is named in the leases it holds (`queue show`): host and port."""
        return f"{socket.gethostname()}:{self.mediator_port}"

    @property
    def claim_lease_s(self) -> float:
        """How long a claim in flight is left to its sender before the forwarder takes it over:
        longer than a login plus a submission can take."""
        # login, insuree lookup and submission, one of them retried after a token refresh
        return 4 * (self.openimis_connect_timeout + self.openimis_read_timeout) + 5

    @property
    def registers_with_openhim(self) -> bool:
        return bool(self.openhim_api_url)

    @property
    def route_host(self) -> str:
        """Where OpenHIM's router reaches the mediator."""
        if self.mediator_route_host:
            return self.mediator_route_host
        return "localhost" if self.mediator_host in ("0.0.0.0", "::", "") else self.mediator_host

    @property
    def route_port(self) -> int:
        return self.mediator_route_port or self.mediator_port

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A validated copy with some settings replaced (names as the dataclass fields)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw.update(overrides)
        return _build(raw)

    def console_params(self) -> dict[str, str]:
        """Console parameter name -> field name, for the settings editable in OpenHIM."""
        return {f.metadata["console"]: f.name for f in fields(self) if "console" in f.metadata}


def _tls(verify: bool, ca_bundle: str) -> bool | str:
    return (ca_bundle or True) if verify else False


def load_settings(environ: Mapping[str, str] | None = None, defaults_file: Path = DEFAULTS_FILE) -> Settings:
    """Build the settings from the defaults file and the environment."""
    environ = os.environ if environ is None else environ
    try:
        with defaults_file.open("rb") as fh:
            raw: dict[str, Any] = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read the defaults file {defaults_file}: {exc}") from None
    for f in fields(Settings):
        value = environ.get(f.name.upper())
        if f.type == "Secret" and (from_file := _secret_file(f.name.upper(), environ)) is not None:
            if value is not None:
                raise SettingsError(f"{f.name.upper()}: set it or {f.name.upper()}_FILE, not both")
            value = from_file
        if value is not None:
            raw[f.name] = value
    raw["mediator_state_dir"] = _state_dir(str(raw.get("mediator_state_dir", "")).strip(), environ)
    if store_path := str(raw.get("claim_store_path", "")).strip():
        raw["claim_store_path"] = os.path.abspath(os.path.expanduser(store_path))
    return _build(raw)


def _secret_file(name: str, environ: Mapping[str, str]) -> str | None:
    """`<NAME>_FILE`, for every secret setting: the path of a file holding the value (Docker and
    Kubernetes secrets), so that the secret stays out of the environment. A new secret setting
    gets it by being declared a `Secret`."""
    path = environ.get(f"{name}_FILE")
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{name}_FILE: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")  # the newline an editor or `echo` adds


def _state_dir(value: str, environ: Mapping[str, str]) -> str:
    """An absolute path, so that every process of the instance and every operator command finds
    the same state whatever its current directory; empty: the user's XDG state directory."""
    if value:
        return os.path.abspath(os.path.expanduser(value))
    base = environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):  # XDG: a relative value is invalid and ignored
        home = environ.get("HOME") or os.path.expanduser("~")
        if not os.path.isabs(home):
            raise SettingsError("MEDIATOR_STATE_DIR: no default without a home directory: set it")
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "openimis-mediator")


def _build(raw: Mapping[str, Any]) -> Settings:
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.name.upper()
        if f.name not in raw:
            raise SettingsError(f"{name}: no value (missing from {DEFAULTS_FILE.name})")
        values[f.name] = _coerce(name, f.type, raw[f.name])
    settings = Settings(**values)
    _check(settings)
    return settings


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    type_name = type_name if isinstance(type_name, str) else type_name.__name__
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if type_name == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(str(value).strip())
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip())
        if type_name == "Secret":
            return Secret(value)
        return str(value).strip()
    except ValueError:
        shown = "***" if type_name == "Secret" else repr(value)
        raise SettingsError(f"{name}: {shown} is not a valid {type_name}") from None


def _check(s: Settings) -> None:
    def fail(name: str, why: str) -> None:
        raise SettingsError(f"{name.upper()}: {why}")

    for port_field in ("mediator_port", "sandbox_port", "mediator_route_port"):
        port = getattr(s, port_field)
        if not 0 <= port <= 65535 or (port == 0 and port_field == "mediator_port"):
            fail(port_field, f"{port} is not a usable TCP port")
    for url_field in ("openimis_url", "mediator_public_url", "openhim_api_url"):
        url = getattr(s, url_field)
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                fail(url_field, f"{url!r} is not an absolute http(s) URL")
    if s.claim_store_url and not s.claim_store_url.reveal().startswith(("postgresql://", "postgres://")):
        fail("claim_store_url", "must be a postgresql://user:password@host:port/database URL")
    if s.claim_store_pool_size < 1:
        fail("claim_store_pool_size", "must be at least 1")
    if not s.openimis_fhir_path.startswith("/"):
        fail("openimis_fhir_path", f"{s.openimis_fhir_path!r} must start with '/'")
    for bundle_field in ("openimis_ca_bundle", "openhim_ca_bundle"):
        bundle = getattr(s, bundle_field)
        if bundle and not Path(bundle).is_file():
            fail(bundle_field, f"{bundle!r} is not a readable file")
    if s.openhim_auth not in ("basic", "token", "auto"):
        fail("openhim_auth", f"{s.openhim_auth!r} is not one of basic, token, auto")
    if s.openhim_api_url and not (s.openhim_username and s.openhim_password):
        fail("openhim_password", "OPENHIM_USERNAME and OPENHIM_PASSWORD are required with OPENHIM_API_URL")
    if not 1 <= s.openhim_heartbeat_interval <= 30:
        fail(
            "openhim_heartbeat_interval",
            "must be between 1 and 30 seconds (core marks a mediator down after 60 s)",
        )
    if s.mediator_cpu_binding not in CPU_BINDINGS:
        fail("mediator_cpu_binding", f"{s.mediator_cpu_binding!r} is not one of {', '.join(CPU_BINDINGS)}")
    if s.log_level.upper() not in _LOG_LEVELS:
        fail("log_level", f"{s.log_level!r} is not one of {', '.join(sorted(_LOG_LEVELS))}")
    for positive in (
        "mediator_workers",
        "mediator_threads",
        "mediator_max_body_bytes",
        "openimis_connect_timeout",
        "openimis_read_timeout",
        "openimis_pool_size",
        "claim_retention_days",
        "forward_backoff_initial",
        "forward_backoff_max",
        "forward_poll_interval",
        "adjudication_poll_interval",
        "adjudication_reads_per_minute",
        "adjudication_follow_days",
        "notification_backoff_initial",
        "notification_backoff_max",
        "notification_max_failures",
        "notification_timeout",
        "master_data_refresh_interval",
        "master_data_full_refresh_interval",
    ):
        if getattr(s, positive) <= 0:
            fail(positive, f"{getattr(s, positive)} must be greater than zero")
    if not 0 <= s.forward_backoff_jitter <= 1:
        fail("forward_backoff_jitter", "must be between 0 and 1 (a fraction of the delay)")
    if s.forward_backoff_max < s.forward_backoff_initial:
        fail("forward_backoff_max", "must not be smaller than FORWARD_BACKOFF_INITIAL")
    if s.openimis_login_retry_after < 0:
        fail("openimis_login_retry_after", "must not be negative")
    if s.openimis_url and not s.openimis_username:
        fail("openimis_username", "is required when OPENIMIS_URL is set")
    if (
        s.openimis_url
        and s.openimis_password.reveal() == SANDBOX_PASSWORD
        and not _is_loopback(s.openimis_url)
    ):
        fail(
            "openimis_password",
            f"the demo default is refused for OPENIMIS_URL {s.openimis_url}: set the API user's password "
            "(OPENIMIS_PASSWORD or OPENIMIS_PASSWORD_FILE)",
        )


def _is_loopback(url: str) -> bool:
    """A server on this host (the sandbox, a developer's openIMIS), not a real deployment's."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
