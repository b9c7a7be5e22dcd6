"""What a release installs: the wheel in a fresh virtual environment, offline, writes the
same pack as the repository ships; the sdist carries what its tests read.

Nothing here reaches a package index: the wheel and the sdist are built with the backend
[build-system] pins (installed from the lock), and the fresh environment installs the
dependencies from wheels repacked from this environment's own installed distributions.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streamobs.pack.command import generated_files
from tests.fixtures import ROOT

_SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.py[cod]", ".*_cache", ".hypothesis", "build", "dist",
    "*.egg-info",
)  # fmt: skip
# The directories the sdist must carry whole: the pack, deploy files, runbooks, the tests.
SDIST_TREES = ("alerts", "dashboards", "deploy", "docs", "tests")


def _clean_env() -> dict[str, str]:
    """This environment without what would put the checkout on another Python's path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout, so building writes nothing into it."""
    copy = tmp_path_factory.mktemp("source") / "streamobs"
    shutil.copytree(ROOT, copy, ignore=_SKIP_COPY)
    return copy


@pytest.fixture(scope="module")
def built(source: Path) -> tuple[Path, Path, str]:
    """The wheel and the sdist, and what the build printed."""
    build_system = (ROOT / "pyproject.toml").read_text().split("[build-system]", 1)[1]
    pinned = re.search(r"^requires = \[(.*)\]", build_system, re.M)
    installed = f'"setuptools=={importlib.metadata.version("setuptools")}"'
    assert pinned and pinned.group(1) == installed, f"[build-system] does not pin {installed}"
    dist = source / "dist"
    proc = _run(
        sys.executable,
        "-c",
        "import setuptools.build_meta as b; b.build_wheel('dist'); b.build_sdist('dist')",
        cwd=source,
    )
    [wheel] = dist.glob("streamobs-*.whl")
    [sdist] = dist.glob("streamobs-*.tar.gz")
    return wheel, sdist, proc.stdout + proc.stderr


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _repack(dist: importlib.metadata.Distribution, out: Path) -> None:
    """An installed distribution as a wheel again: its files as RECORD lists them (its
    console scripts are made anew from entry_points.txt by pip)."""
    info = Path(str(dist._path))  # type: ignore[attr-defined]
    site = info.parent
    tags = [line.split(":", 1)[1].strip() for line in (info / "WHEEL").read_text().splitlines()
            if line.startswith("Tag:")]  # fmt: skip
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    wheel = out / f"{name}-{dist.version}-{tags[0]}.whl"
    record_name = f"{info.name}/RECORD"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in dist.files or ():
            relative = file.as_posix()
            if relative.startswith("..") or "__pycache__" in relative:
                continue
            if relative.startswith(info.name + "/") and Path(relative).name in (
                "RECORD", "INSTALLER", "REQUESTED", "direct_url.json",
            ):  # fmt: skip
                continue
            path = site / relative
            if not path.is_file():
                continue
            data = path.read_bytes()
            archive.writestr(relative, data)
            records.append(_record_line(relative, data))
        records.append(f"{record_name},,")
        archive.writestr(record_name, "\n".join(records) + "\n")


def _runtime_closure() -> Iterator[importlib.metadata.Distribution]:
    """streamobs' runtime dependencies, and theirs, as installed here."""
    seen: set[str] = set()
    pending = [str(r) for r in importlib.metadata.requires("streamobs") or ()]
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        yield dist
        pending += dist.requires or []


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed from nothing but local files;
    returns its bin directory."""
    wheel, _, _ = built
    work = tmp_path_factory.mktemp("install")
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for dist in _runtime_closure():
        _repack(dist, wheelhouse)
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    proc = _run(
        venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--find-links",
        wheelhouse, "--disable-pip-version-check", wheel,
    )  # fmt: skip
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    where = _run(
        venv / "bin" / "python", "-c", "import streamobs; print(streamobs.__file__)", cwd=work
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    return venv / "bin"


def test_the_build_warns_of_nothing_deprecated(built: tuple[Path, Path, str]) -> None:
    _, _, output = built
    assert "Deprecat" not in output, output
    warnings = [line for line in output.lower().splitlines() if "warn" in line]
    assert not [line for line in warnings if "licen" in line], warnings


def test_the_wheel_carries_the_license_and_no_development_files(
    built: tuple[Path, Path, str],
) -> None:
    wheel, _, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamobs-0.1.0.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read("streamobs-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "streamobs/pack/command.py" in names and "streamobs/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


def test_the_installed_wheel_writes_the_checked_in_pack(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    out.mkdir()
    # From another directory: nothing may come from the checkout.
    proc = _run(installed / "streamobs", "pack", "--out", out, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(generated_files())
    for path in written:
        assert (out / path).read_text() == (ROOT / path).read_text(), f"{path} differs"
    # Every generated file the repository ships is one the command writes.
    shipped = {p.relative_to(ROOT) for p in (ROOT / "dashboards").glob("*.json")}
    shipped |= {p.relative_to(ROOT) for p in (ROOT / "alerts").glob("*.yml")}
    assert shipped <= set(written)


def test_the_installed_wheel_runs_pack_for_a_config(installed: Path, tmp_path: Path) -> None:
    config = tmp_path / "streamobs.yml"
    config.write_text(
        "targets:\n  - name: llm\n    url: http://127.0.0.1:8000\n    slo: {ttft: 1500ms}\n"
    )
    _run(installed / "streamobs", "pack", "--config", config, "--out", tmp_path / "p", cwd=tmp_path)
    rules = (tmp_path / "p" / "alerts" / "streamobs.rules.yml").read_text()
    assert 'target="llm", le="1.5"' in rules


def test_development_generators_fail_with_one_line_when_installed(
    installed: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [installed / "python", "-m", "streamobs.reference", "--check"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_clean_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "source checkout only" in proc.stderr
    help_text = _run(installed / "streamobs", "--help", cwd=tmp_path).stdout
    assert "pack" in help_text


def test_the_sdist_carries_what_its_tests_read(built: tuple[Path, Path, str], source: Path) -> None:
    _, sdist, _ = built
    prefix = re.sub(r"\.tar\.gz$", "", sdist.name)
    with tarfile.open(sdist) as archive:
        members = {m.name.removeprefix(prefix + "/") for m in archive.getmembers() if m.isfile()}
    expected = {"LICENSE", "README.md", "pyproject.toml", "Makefile", "requirements.lock"}
    for tree in SDIST_TREES:
        expected |= {p.relative_to(source).as_posix() for p in (source / tree).rglob("*")
                     if p.is_file()}  # fmt: skip
    missing = sorted(expected - members)
    assert missing == [], f"not in the sdist: {missing[:20]}"
