"""The lock files pin, with hashes, every dependency pyproject.toml names, at a version it
allows: a dependency added to pyproject without `scripts/lock` fails here, not at install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"requirements.lock": [], "requirements-dev.lock": ["dev"],
         "requirements-bench.lock": ["dev", "bench"]}
PIN = re.compile(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(lock: str) -> dict[str, list[str]]:
    """Each pinned name → its versions (a universal lock may pin one per Python)."""
    found: dict[str, list[str]] = {}
    lines = (ROOT / lock).read_text().splitlines()
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert lines[number + 1].strip().startswith("--hash=sha256:"), line
            found.setdefault(canonicalize_name(match.group(1)), []).append(match.group(2))
    return found


def wanted(extras: list[str]) -> list[Requirement]:
    optional = PROJECT["optional-dependencies"]
    names = PROJECT["dependencies"] + [name for extra in extras for name in optional[extra]]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_every_dependency_of_pyproject_is_pinned_at_a_version_it_allows(
        lock: str, extras: list[str]) -> None:
    pinned = pins(lock)
    for requirement in wanted(extras):
        versions = pinned.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in {lock}: run scripts/lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {requirement.name}=={version}, outside {requirement.specifier}: "
                "run scripts/lock")


def test_every_line_of_a_lock_is_a_pin_a_hash_or_a_comment() -> None:
    for lock in LOCKS:
        for line in (ROOT / lock).read_text().splitlines():
            text = line.strip()
            assert (not text or text.startswith(("#", "--hash=sha256:"))
                    or PIN.match(line)), f"{lock}: {line}"


def test_the_runtime_lock_holds_no_development_tool() -> None:
    assert not {"pytest", "ruff", "mypy", "uv"} & set(pins("requirements.lock"))
