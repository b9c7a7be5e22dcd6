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

from streamobs.config import ConfigError, read_config_text
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
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise ConfigError(f"web config {path}: invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"web config {path}: expected a mapping")
    unknown = sorted(set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"})
    if unknown:
        raise ConfigError(f"web config {path}: {unknown[0]}: unknown key")
    base = Path(path).parent
    users = _users(data.get("basic_auth_users"), path)
    return WebConfig(
        tls=_tls(data.get("tls_server_config"), base, path),
        auth=BasicAuth(users) if users else None,
    )


def _tls(raw: object, base: Path, path: str) -> ssl.SSLContext | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"web config {path}: tls_server_config: expected a mapping")
    known = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"web config {path}: tls_server_config.{unknown[0]}: unknown key")
    cert, key = raw.get("cert_file"), raw.get("key_file")
    if not cert or not key:
        raise ConfigError(f"web config {path}: tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(base / str(cert), base / str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"web config {path}: cannot load certificate/key: {exc}") from None
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(f"web config {path}: client_auth_type {auth!r} is not supported")
    context.verify_mode = _CLIENT_AUTH[auth]
    if raw.get("client_ca_file"):
        try:
            context.load_verify_locations(base / str(raw["client_ca_file"]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"web config {path}: cannot load client_ca_file: {exc}") from None
    return context


def _users(raw: object, path: str) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"web config {path}: basic_auth_users: expected user: bcrypt-hash")
    users = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            # Never echo the value: it might be a plain password put there by mistake.
            raise ConfigError(f"web config {path}: basic_auth_users.{user}: expected a bcrypt hash")
        users[str(user)] = hashed.encode()
    return users
