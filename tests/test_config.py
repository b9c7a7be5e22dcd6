"""Config: every rule rejects with the key's path; a good file loads into typed values."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from streamobs.cli import main
from streamobs.config import ConfigError, load_config, parse_config, parse_duration

GOOD = """
web:
  listen_address: 127.0.0.1:9999
max_concurrency: 2
target_defaults:
  interval: 30s
  timeouts: {total: 1m}
targets:
  - name: local
    url: http://127.0.0.1:8000
    model: tiny
    jitter: 2s
    slo: {ttft: 1500ms, objective: 0.995}
  - name: gw
    url: https://gw.example/v1/completions
    interval: 1m30s
    headers: {X-Tenant: ops}
    metrics_url: false
histogram_buckets:
  ttft: [100ms, 1s, 5s]
modules:
  short: {max_tokens: 4}
"""


def write(tmp_path: Path, text: str, name: str = "streamobs.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    local, gw = config.targets
    assert config.listen_address == "127.0.0.1:9999" and config.max_concurrency == 2
    assert (local.interval, local.jitter, local.timeouts.total) == (30.0, 2.0, 60.0)
    assert local.slo.ttft_seconds == 1.5 and local.slo.objective == 0.995
    assert local.engine == "local"
    assert [(e.name, e.metrics_url) for e in config.engines] == [
        ("local", "http://127.0.0.1:8000/metrics")
    ]
    assert gw.target.endpoint == "completions" and gw.interval == 90.0
    assert gw.engine is None and gw.model is None and dict(gw.headers) == {"X-Tenant": "ops"}
    # SLO thresholds are always bucket edges.
    assert config.latency_buckets()["ttft"] == (0.1, 1.0, 1.5, 2.0, 5.0)
    assert 0.1 in config.latency_buckets()["tpot"]
    assert config.module_target("short", "http://h:1").max_tokens == 4
    assert config.modules["short"].credential_hosts == ()


def test_module_credential_hosts_load(tmp_path: Path) -> None:
    text = GOOD.replace(
        "short: {max_tokens: 4}", "short: {credential_hosts: [gw.example, '*.lab']}"
    )
    hosts = load_config(write(tmp_path, text)).modules["short"].credential_hosts
    assert [str(h) for h in hosts] == ["gw.example", "*.lab"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("targets: []", "targets: at least one target is required"),
        ("targets: [{name: a, url: http://h, colour: red}]", "targets[0].colour: unknown key"),
        ("bogus: 1\ntargets: [{name: a, url: http://h}]", "bogus: unknown key"),
        ("targets: [{name: a, url: http://h, interval: soon}]", "targets[0].interval: bad dur"),
        ("targets: [{name: a, url: http://h, interval: -5s}]", "targets[0].interval: bad dur"),
        ("targets: [{name: a, url: http://h, interval: 0}]", "must be positive"),
        ("targets: [{name: a, url: ftp://h}]", "targets[0].url: bad URL"),
        ("targets: [{name: a}]", "targets[0].url: required"),
        ("targets: [{url: http://h}]", "targets[0].name: required"),
        ("targets: [{name: a, url: http://h}, {name: a, url: http://i}]", "duplicate target"),
        (
            "targets: [{name: a, url: http://h, timeouts: {first_token: 5m}}]",
            "targets[0].timeouts.first_token: longer than",
        ),
        (
            "targets: [{name: a, url: http://h, timeouts: {read: 5s}}]",
            "targets[0].timeouts.read: unknown key",
        ),
        (
            "targets: [{name: a, url: http://h, api_key_env: A, api_key_file: /x}]",
            "not both",
        ),
        (
            "targets: [{name: a, url: http://h, api_key_file: /nonexistent/key}]",
            "targets[0].api_key_file: cannot read API key file /nonexistent/key",
        ),
        (
            "targets: [{name: a, url: http://h, api_key_env: STREAMOBS_TEST_UNSET_VAR}]",
            "STREAMOBS_TEST_UNSET_VAR is not set",
        ),
        ("targets: [{name: a, url: http://h, max_tokens: 0}]", "targets[0].max_tokens"),
        ("targets: [{name: a, url: http://h, slo: {objective: 1}}]", "objective"),
        ("targets: [{name: a, url: http://h, jitter: 20s}]", "shorter than the interval"),
        (
            "targets: [{name: a, url: http://h, headers: {Authorization: x}}]",
            "use api_key_file",
        ),
        ("web: {listen_address: nowhere}\ntargets: [{name: a, url: http://h}]", "host:port"),
        (
            "histogram_buckets: {ttft: [2s, 1s]}\ntargets: [{name: a, url: http://h}]",
            "strictly increasing",
        ),
        ("modules: {m: {colour: 1}}\ntargets: [{name: a, url: http://h}]", "modules.m.colour"),
        ("targets: {name: a}", "at least one target"),
        (
            "collectors: {gpu: {deadline: 20s}}\ntargets: [{name: a, url: http://h}]",
            "collectors.gpu.deadline: must be shorter than the interval",
        ),
        (
            "collectors: {gpu: {price_per_gpu_hour: -2}}\ntargets: [{name: a, url: http://h}]",
            "collectors.gpu.price_per_gpu_hour",
        ),
        (
            "collectors: {nvml: {}}\ntargets: [{name: a, url: http://h}]",
            "collectors.nvml: unknown key",
        ),
        ("- just a list", "config: expected a mapping"),
        (
            "modules: {m: {credential_hosts: vllm}}\ntargets: [{name: a, url: http://h}]",
            "modules.m.credential_hosts: expected a list",
        ),
        (
            "modules: {m: {credential_hosts: [ok, 'http://x/']}}\ntargets: [{name: a, url: http://h}]",
            "modules.m.credential_hosts[1]: 'http://x/' is not a host pattern",
        ),
        (
            "target_defaults: {credential_hosts: [h]}\ntargets: [{name: a, url: http://h}]",
            "target_defaults.credential_hosts: belongs to a /probe module",
        ),
        (
            "targets: [{name: a, url: http://h, credential_hosts: [h]}]",
            "targets[0].credential_hosts: unknown key",
        ),
    ],
)
def test_invalid_configs_name_the_key(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"at line \d+, column \d+"):
        load_config(write(tmp_path, "targets:\n  - name: [unclosed\n"))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")


def test_durations() -> None:
    assert parse_duration("1m30s", "x") == 90
    assert parse_duration("250ms", "x") == 0.25
    assert parse_duration(2, "x") == 2.0
    assert parse_duration("1.5h", "x") == 5400
    for bad in ("", "1x", "s", "1s 2s", True, None, "-1s"):
        with pytest.raises(ConfigError):
            parse_duration(bad, "x")


def test_secret_values_never_in_errors_or_repr(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-hidden-123\n")
    config = parse_config({"targets": [{"name": "a", "url": "http://h", "api_key_file": str(key)}]})
    assert "sk-hidden-123" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        parse_config({"targets": [{"name": "a", "url": "http://h", "headers": {"X-K": 5}}]})
    assert "5" not in str(caught.value).split(":")[-1]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "OK, 2 target(s): local, gw" in capsys.readouterr().out
    bad = write(tmp_path, "targets: [{name: a, url: http://h, nope: 1}]", "bad.yml")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "streamobs check-config: error: targets[0].nope: unknown key"


def test_gpu_collector_defaults_off_in_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal = {"targets": [{"name": "a", "url": "http://h"}]}
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert parse_config(minimal).gpu.enabled
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert not parse_config(minimal).gpu.enabled
    on = {**minimal, "collectors": {"gpu": {"enabled": True, "price_per_gpu_hour": 2.5}}}
    assert parse_config(on).gpu.enabled and parse_config(on).gpu.price_per_gpu_hour == 2.5


# -- bounds, merging, sizes ---------------------------------------------------------------


def _one(**target: object) -> dict[str, object]:
    return {"targets": [{"name": "a", "url": "http://h", **target}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_one(interval=1e11), "targets[0].interval: at most 1d, got 100000000000.0"),
        (_one(interval="99999999999d"), "targets[0].interval: at most 1d"),
        (_one(interval=10**400), "targets[0].interval: at most 1d"),
        (_one(interval="1ms"), "targets[0].interval: at least 100ms"),
        (_one(timeouts={"total": 1e11}), "targets[0].timeouts.total: at most 1h"),
        (_one(timeouts={"connect": "2h"}), "targets[0].timeouts.connect: at most 1h"),
        (_one(slo={"ttft": float("nan")}), "targets[0].slo.ttft: duration must be positive"),
        (_one(max_tokens=10**12), "targets[0].max_tokens: expected an integer from 1 to"),
        ({**_one(), "max_concurrency": 10**9}, "max_concurrency: expected an integer from 1 to"),
        ({**_one(), "shutdown_grace": "30d"}, "shutdown_grace: at most 1h"),
        (
            {**_one(), "collectors": {"engines": {"max_bytes": 2**40}}},
            "collectors.engines.max_bytes: expected an integer from 1024 to",
        ),
        (
            {**_one(), "histogram_buckets": {"ttft": [f"{i}ms" for i in range(1, 200)]}},
            "histogram_buckets.ttft: at most 100 bucket edges",
        ),
        (_one(headers={f"X-{i}": "v" for i in range(100)}), "targets[0].headers: at most 64"),
        (
            {"targets": [{"name": f"t{i}", "url": "http://h"} for i in range(10_001)]},
            "targets: at most 10000 targets",
        ),
    ],
)
def test_values_have_upper_bounds(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)


def test_module_and_target_settings_merge_with_the_defaults() -> None:
    config = parse_config(
        {
            "target_defaults": {
                "timeouts": {"connect": "2s", "first_token": "5s"},
                "slo": {"ttft": "1s"},
                "headers": {"X-Tenant": "ops"},
            },
            "targets": [{"name": "a", "url": "http://h", "timeouts": {"total": "20s"}}],
            "modules": {
                "short": {"max_tokens": 8, "timeouts": {"total": "4s"}, "headers": {"X-1": "1"}}
            },
        }
    )
    target = config.targets[0]
    assert (target.timeouts.connect, target.timeouts.first_token) == (2.0, 5.0)
    assert target.timeouts.total == 20.0 and target.slo.ttft_seconds == 1.0
    short = config.module_target("short", "http://x")
    # Inherited phases are shortened to the module's own total; the others are kept.
    assert (short.timeouts.connect, short.timeouts.first_token, short.timeouts.total) == (2, 4, 4)
    assert short.timeouts.headers == 4.0
    assert dict(short.headers) == {"X-Tenant": "ops", "X-1": "1"}
    with pytest.raises(ConfigError, match=r"modules\.m\.timeouts\.first_token: longer than"):
        parse_config(
            {**_one(), "modules": {"m": {"timeouts": {"first_token": "9s", "total": "5s"}}}}
        )


def test_the_readme_configuration_reference_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("Configuration reference", 1)[1].split("```yaml\n", 1)[1]
    block = block.split("```", 1)[0]
    key = tmp_path / "key"
    key.write_text("sk-readme\n")
    web = tmp_path / "web.yml"
    web.write_text("{}\n")
    text = re.sub(r"/run/credentials/streamobs\.service/[\w-]+", str(key), block)
    text = text.replace("config_file: web.yml", f"config_file: {web}")
    config = load_config(write(tmp_path, text))
    short = config.module_target("short", "http://h")
    assert short.max_tokens == 8 and short.timeouts.total == 10.0
    assert short.timeouts.first_token == 10.0
    gateway = {t.name: t for t in config.targets}["gateway"]
    assert gateway.basic_auth is not None and gateway.basic_auth.username == "probe"
    assert gateway.api_key is None


def test_a_huge_config_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    def no_parsing(*args: object) -> object:
        raise AssertionError("parsed a file that should have been refused")

    big = tmp_path / "big.yml"
    line = b"# " + b"x" * 1021 + b"\n"
    with big.open("wb") as out:
        out.write(b"targets: [{name: a, url: http://h}]\n")
        for _ in range(53 * 1024):  # 53 MiB
            out.write(line)
    monkeypatch.setattr(yaml, "safe_load", no_parsing)
    with pytest.raises(ConfigError, match=r"config file .*big\.yml is larger than 4 MiB"):
        load_config(big)
    assert main(["check-config", str(big)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_config_path_that_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, reason in (("/dev/zero", "is a device"), (fifo, "is a FIFO"), (tmp_path, "dir")):
        with pytest.raises(ConfigError, match=reason):
            load_config(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"taregts": [{"name": "a", "url": "http://h"}]},
            "taregts: unknown key (did you mean targets?)",
        ),
        (
            {"targets": [{"name": "a", "url": "http://h", "intervall": "5s"}]},
            "targets[0].intervall: unknown key (did you mean interval?)",
        ),
        (
            {"targets": [{"name": "a", "url": "http://h"}], "collectors": {"vlm": {}}},
            "collectors.vlm: unknown key (did you mean vllm?)",
        ),
    ],
)
def test_an_unknown_key_is_named_at_every_level(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == message


def test_engines_are_scraped_once_and_targets_name_them() -> None:
    config = parse_config(
        {
            "engines": [{"name": "vllm-a", "metrics_url": "http://127.0.0.1:8000/metrics"}],
            "targets": [
                {"name": "direct", "url": "http://127.0.0.1:8000/v1", "engine": "vllm-a"},
                {"name": "nginx", "url": "http://127.0.0.1:8080/v1", "engine": "vllm-a"},
                # Two paths without an engine of their own at the same /metrics share one.
                {"name": "b1", "url": "http://10.0.0.2:8000/v1"},
                {"name": "b2", "url": "http://10.0.0.2:8000/v1/completions"},
                {"name": "gw", "url": "https://gw.example/v1", "metrics_url": False},
            ],
        }
    )
    assert [(e.name, e.kind, e.metrics_url) for e in config.engines] == [
        ("vllm-a", "auto", "http://127.0.0.1:8000/metrics"),
        ("b1", "auto", "http://10.0.0.2:8000/metrics"),
    ]
    assert [t.engine for t in config.targets] == ["vllm-a", "vllm-a", "b1", "b1", None]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"targets": [{"name": "a", "url": "http://h", "engine": "nope"}]},
            "targets[0].engine: no engine named 'nope' (none configured)",
        ),
        (
            {
                "engines": [{"name": "e", "metrics_url": "http://h/metrics"}],
                "targets": [
                    {"name": "a", "url": "http://h", "engine": "e", "metrics_url": "http://x/m"}
                ],
            },
            "targets[0].metrics_url: the engine 'e' has it",
        ),
        (
            {
                "engines": [{"name": "e", "metrics_url": "http://h/metrics", "kind": "vlm"}],
                "targets": [{"name": "a", "url": "http://h"}],
            },
            "engines[0].kind: one of auto, vllm, sglang, trtllm, llamacpp, tgi, litellm "
            "(auto: recognised from what it serves), got 'vlm'",
        ),
        (
            {
                "engines": [{"name": "a", "metrics_url": "http://h/metrics"}],
                "targets": [{"name": "a", "url": "http://other"}],
            },
            "targets[0]: its own /metrics would be an engine named 'a', which engines: "
            "already has; name its engine (engine:) or set metrics_url: false",
        ),
    ],
)
def test_engine_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == message


def test_tool_call_is_a_target_setting_refused_where_the_protocol_has_none() -> None:
    config = parse_config({"targets": [{"name": "a", "url": "http://h/v1", "tool_call": True}]})
    assert config.targets[0].tool_call is True
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"targets": [{"name": "a", "url": "http://h/v1/completions", "tool_call": True}]}
        )
    assert str(caught.value) == (
        "targets[0].tool_call: the completions endpoint has no tool calls "
        "(chat, responses or messages have)"
    )
