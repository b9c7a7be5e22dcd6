"""TLS and basic auth from a web-config file in the Prometheus exporter-toolkit format:

tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert   # optional
  client_ca_file: ca.crt                          # optional
basic_auth_users:
  alice: $2y$10$...   # bcrypt hash, e.g. from `htpasswd -nBC 10 "" | tr -d ':'`
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamobs.config import ConfigError, Section, read_config_text
from streamobs.web.basic_auth import BasicAuth

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = field(default=None, repr=False)

    def authorised(self, header: str | None) -> bool:
        """True when no users are configured or the ``Authorization`` header names one."""
        return self.auth is None or self.auth.check(header)


def load_web_config(path: str | None) -> WebConfig:
    if not path:
        return WebConfig()
    text = read_config_text(path, "web config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"web config {path}: invalid YAML") from None
    try:
        # The daemon config's strict reader: unknown keys are named, with a suggestion.
        root = Section(data, "")
        root.expect(("tls_server_config", "basic_auth_users", "http_server_config"))
        root.raw("http_server_config")  # accepted as the exporter toolkit has it; unused
        users = _users(root.raw("basic_auth_users"))
        tls = _tls(root.section("tls_server_config"), Path(path).parent)
        root.done()
    except ConfigError as exc:
        raise ConfigError(f"web config {path}: {exc}") from None
    return WebConfig(tls=tls, auth=BasicAuth(users) if users else None)


def _tls(section: Section, base: Path) -> ssl.SSLContext | None:
    if not section.data:
        return None
    section.expect(("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"))
    cert, key = section.text("cert_file"), section.text("key_file")
    if not cert or not key:
        raise ConfigError("tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _min_version(section)
    try:
        context.load_cert_chain(base / cert, base / key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load certificate/key: {exc}") from None
    auth = section.text("client_auth_type", "NoClientCert") or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        known = ", ".join(_CLIENT_AUTH)
        raise ConfigError(f"{section.at('client_auth_type')}: one of {known}, got {auth!r}")
    context.verify_mode = _CLIENT_AUTH[auth]
    ca = section.text("client_ca_file")
    if ca:
        try:
            context.load_verify_locations(base / ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client_ca_file: {exc}") from None
    section.done()
    return context


_MIN_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def _min_version(section: Section) -> ssl.TLSVersion:
    # The exporter toolkit's names; TLS 1.0 and 1.1 are not offered.
    name = section.text("min_version", "TLS12") or "TLS12"
    if name not in _MIN_VERSIONS:
        known = ", ".join(_MIN_VERSIONS)
        raise ConfigError(f"{section.at('min_version')}: one of {known}, got {name!r}")
    return _MIN_VERSIONS[name]


def _users(raw: object) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("basic_auth_users: expected user: bcrypt-hash")
    users = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            # Never echo the value: it might be a plain password put there by mistake.
            raise ConfigError(f"basic_auth_users.{user}: expected a bcrypt hash")
        users[str(user)] = hashed.encode()
    return users
