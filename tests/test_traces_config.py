"""The traces_receiver section: off by default, strictly read, fixed for the process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamobs.config import ConfigError, load_config, parse_config
from streamobs.daemon import Daemon
from streamobs.traces.settings import TracesReceiverSettings

TARGETS = [{"name": "a", "url": "http://127.0.0.1:9"}]


def test_off_by_default_and_no_series_while_off() -> None:
    config = parse_config({"targets": TARGETS})
    assert config.traces_receiver == TracesReceiverSettings()
    assert not config.traces_receiver.enabled
    daemon = Daemon(parse_config({"targets": TARGETS, "web": {"listen_address": "127.0.0.1:0"}}))
    assert daemon.runtime.traces is None
    assert b"streamobs_traces_" not in daemon.runtime.render()
    assert b"streamobs_probe_server_" not in daemon.runtime.render()


def test_every_setting_is_read() -> None:
    section = {
        "http_listen_address": "127.0.0.1:4318",
        "grpc_listen_address": "[::1]:4317",
        "join_wait": "45s",
        "max_pending": 50,
        "max_request_bytes": 65536,
        "max_concurrency": 2,
        "read_timeout": "3s",
        "forward": False,
        "forward_queue_size": 8,
    }
    settings = parse_config({"targets": TARGETS, "traces_receiver": section}).traces_receiver
    assert settings == TracesReceiverSettings(
        "127.0.0.1:4318", "[::1]:4317", 45.0, 50, 65536, 2, 3.0, False, 8
    )
    assert settings.enabled


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"http_address": "x"}, "traces_receiver.http_address: unknown key"),
        ({"http_listen_address": "nowhere"}, "traces_receiver.http_listen_address"),
        ({"join_wait": "soon"}, "traces_receiver.join_wait"),
        ({"max_request_bytes": 10}, "traces_receiver.max_request_bytes"),
        ({"forward": "yes"}, "traces_receiver.forward"),
        ([], "traces_receiver: expected a mapping"),
    ],
)
def test_bad_settings_are_config_errors(section: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"targets": TARGETS, "traces_receiver": section})


def test_receiver_settings_cannot_change_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "streamobs.yml"
    path.write_text(
        "web: {listen_address: 127.0.0.1:0}\n"
        "targets: [{name: a, url: 'http://127.0.0.1:9', interval: 1h}]\n"
        "traces_receiver: {http_listen_address: 127.0.0.1:0}\n"
    )
    daemon = Daemon(load_config(path), config_path=str(path))
    daemon.start()
    try:
        receiver = "{http_listen_address: 127.0.0.1:0}"
        path.write_text(path.read_text().replace(receiver, receiver[:-1] + ", join_wait: 5s}"))
        ok, message = daemon.reload()
        assert not ok and "traces_receiver cannot change on reload" in message
    finally:
        daemon.stop()


def test_a_receiver_port_in_use_is_a_refusal_to_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = parse_config(
            {
                "targets": TARGETS,
                "web": {"listen_address": "127.0.0.1:0"},
                "traces_receiver": {"http_listen_address": f"127.0.0.1:{port}"},
            }
        )
        with pytest.raises(
            ConfigError, match=f"traces_receiver: cannot listen on 127.0.0.1:{port}"
        ):
            Daemon(config)
