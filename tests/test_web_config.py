"""The web config file (exporter-toolkit format) read by the daemon config's strict reader:
unknown keys named with a suggestion, values checked, secrets never echoed."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from streamobs.config import ConfigError
from streamobs.web.webconfig import load_web_config
from tests.fixtures import require_binary


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(folder / "k.pem"), "-out", str(folder / "c.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


def write(folder: Path, text: str) -> str:
    path = folder / "web.yml"
    path.write_text(text)
    return str(path)


def test_tls_with_a_minimum_version(certs: Path) -> None:
    tls = "tls_server_config: {cert_file: c.pem, key_file: k.pem, min_version: TLS13}\n"
    config = load_web_config(write(certs, tls))
    assert config.tls is not None
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    default = load_web_config(
        write(certs, "tls_server_config: {cert_file: c.pem, key_file: k.pem}")
    )
    assert default.tls is not None and default.tls.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tls_sever_config: {}\n",
            "tls_sever_config: unknown key (did you mean tls_server_config?)",
        ),
        (
            "tls_server_config: {cert_file: c.pem, key_file: k.pem, cert_fil: x}\n",
            "tls_server_config.cert_fil: unknown key (did you mean cert_file?)",
        ),
        (
            "tls_server_config: {cert_file: c.pem, key_file: k.pem, min_version: TLS10}\n",
            "tls_server_config.min_version: one of TLS12, TLS13, got 'TLS10'",
        ),
        (
            "tls_server_config: {cert_file: c.pem, key_file: k.pem, client_auth_type: Maybe}\n",
            "tls_server_config.client_auth_type: one of NoClientCert",
        ),
        ("tls_server_config: {cert_file: c.pem}\n", "needs both cert_file and key_file"),
        ("tls_server_config: [c.pem]\n", "tls_server_config: expected a mapping, got list"),
        ("- just a list\n", "config: expected a mapping, got list"),
        ("basic_auth_users: {prom: hunter2}\n", "basic_auth_users.prom: expected a bcrypt hash"),
    ],
)
def test_bad_web_config_is_one_clear_error(certs: Path, text: str, message: str) -> None:
    path = write(certs, text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert str(caught.value).startswith(f"web config {path}: ")
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_empty_file_means_no_tls_and_no_auth(certs: Path) -> None:
    config = load_web_config(write(certs, ""))
    assert config.tls is None and config.auth is None
