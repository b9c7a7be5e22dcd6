"""Every YAML and shell example in the README works as written.

YAML that configures streamobs passes ``streamobs check-config`` (a fragment, such as a
``modules:`` block alone, with a stand-in target; the files and variables it names are
made to exist). Every shell command exists, and every ``streamobs`` command line parses
with the real argument parser (nothing is run: no probe leaves the machine); ``make``
targets exist in the Makefile, and ``make demo ARGS="..."`` parses as ``streamobs demo``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamobs.cli import build_parser, main
from streamobs.config import TOP_LEVEL_KEYS
from streamobs.pack.config import parse_options
from tests.fixtures import ROOT

README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CONFIG_KEYS = set(TOP_LEVEL_KEYS)  # streamobs' config, as parse_config reads it
# Commands of other tools an example may show; they are the reader's, not ours to run.
EXTERNAL = {"curl", "kubectl", "systemctl", "systemd-analyze", "docker", "promtool", "amtool",
            "pip", "python", "python3", "cat", "cp", "install", "sudo"}  # fmt: skip
STAND_IN_TARGET = {"name": "stand-in", "url": "http://127.0.0.1:8000"}


def blocks(path: Path, *languages: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced block in one of ``languages``."""
    text = path.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) in languages
    ]


YAML_BLOCKS = blocks(README, "yaml", "yml")
SHELL_BLOCKS = blocks(README, "sh", "bash", "shell", "console")


def _commands(block: str) -> list[list[str]]:
    """Each simple command of a block: comments dropped, ``&&`` and ``;`` split."""
    commands: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words:
            if word in ("&&", "||", ";"):
                commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return [c for c in commands if c]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M))


def _parses(argv: list[str]) -> None:
    """``streamobs argv`` parses (exit 0 of --help is fine; a usage error is not)."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        raise AssertionError(f"streamobs {shlex.join(argv)}: usage error") from exit_


def test_the_readme_has_examples_of_both_kinds() -> None:
    assert len(YAML_BLOCKS) >= 2 and len(SHELL_BLOCKS) >= 5


@pytest.mark.parametrize(("line", "block"), SHELL_BLOCKS, ids=[f"L{n}" for n, _ in SHELL_BLOCKS])
def test_shell_example(line: int, block: str) -> None:
    commands = _commands(block)
    assert commands, f"README line {line}: no command"
    for argv in commands:
        tool, args = argv[0], argv[1:]
        if tool == "streamobs":
            _parses(args)
        elif tool == "make":
            targets = [a for a in args if "=" not in a and not a.startswith("-")]
            assert targets and set(targets) <= _make_targets(), f"make {args}: no such target"
            for assignment in (a for a in args if a.startswith("ARGS=")):
                assert targets == ["demo"], "ARGS is for make demo"
                _parses(["demo", *shlex.split(assignment.removeprefix("ARGS="))])
        elif tool == ".":
            # Sourcing the virtual environment that `make install` creates.
            assert args == [".venv/bin/activate"], args
            assert re.search(r"^VENV \?= \.venv$", (ROOT / "Makefile").read_text(), re.M)
        else:
            assert tool in EXTERNAL, f"README line {line}: unknown command {tool!r}"


def _stand_in_files(text: str, root: Path) -> str:
    """The example's absolute paths moved under ``root``, and every file it names made."""
    text = re.sub(r"(?<=[\s{:])/(?=\w)", str(root) + "/", text)
    data = yaml.safe_load(text)
    for value in _strings(data):
        if value.startswith(str(root)) or value.endswith((".yml", ".yaml")):
            path = Path(value) if value.startswith("/") else root / value
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # An empty web config (no TLS, no auth) or a one-line secret.
                path.write_text("" if path.suffix in (".yml", ".yaml") else "secret\n")
    return text


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


@pytest.mark.parametrize(("line", "block"), YAML_BLOCKS, ids=[f"L{n}" for n, _ in YAML_BLOCKS])
def test_yaml_example(
    line: int,
    block: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"README line {line}: not a mapping"
    if not set(data) & CONFIG_KEYS:
        return  # valid YAML for another tool (parsed above)
    assert set(data) <= CONFIG_KEYS, f"README line {line}: {sorted(set(data) - CONFIG_KEYS)}"
    monkeypatch.chdir(tmp_path)
    # Variables the example names stand in, as the reader would export them.
    for name in re.findall(r"\b(?:api_key_env|password_env|env):\s*(\w+)", block):
        monkeypatch.setenv(name, "secret")
    text = _stand_in_files(block, tmp_path)
    config = yaml.safe_load(text)
    if "targets" not in config:
        config["targets"] = [STAND_IN_TARGET]
    path = tmp_path / "streamobs.yml"
    path.write_text(yaml.safe_dump(config))
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    assert code == 0, f"README line {line}: {captured.err}"
    assert ": OK," in captured.out


def test_the_pack_options_example_in_alerts_readme() -> None:
    [(line, block)] = blocks(ROOT / "alerts" / "README.md", "sh")[-1:]
    options = re.search(r"<<'YAML'\n(.*?)^YAML$", block, re.S | re.M)
    assert options, f"alerts/README.md line {line}: no options heredoc"
    tuned = parse_options(yaml.safe_load(options.group(1)))
    assert tuned.selector == 'job="llm-probes"'
    for argv in _commands(block.split("YAML\n")[-1]):
        assert argv[0] == "streamobs"
        _parses(argv[1:])
