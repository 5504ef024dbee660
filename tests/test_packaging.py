"""What the wheel ships: one ``s3convex`` namespace, every module of the card's folders under it,
and none of the development tools."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Repository folder → the package it installs as (pyproject.toml [tool.setuptools.package-dir]).
INSTALLED_AS = {
    "src/s3convex": "s3convex",
    "consumer": "s3convex/consumer",
    "handlers": "s3convex/handlers",
    "infra": "s3convex/infra",
}


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = out.glob("s3convex-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if not name.startswith("s3convex-")}


def test_the_wheel_claims_one_top_level_name(wheel_files: set[str]) -> None:
    assert {name.split("/", 1)[0] for name in wheel_files} == {"s3convex"}


def test_every_module_of_the_mapped_folders_is_shipped(wheel_files: set[str]) -> None:
    expected = {
        f"{package}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, package in INSTALLED_AS.items()
        for path in (ROOT / folder).rglob("*.py")
    }
    assert expected, "no modules found"
    assert expected - wheel_files == set(), "modules missing from the wheel (add the package to pyproject.toml)"
    assert "s3convex/py.typed" in wheel_files


def test_development_tools_are_not_shipped(wheel_files: set[str]) -> None:
    assert not [name for name in wheel_files if name.endswith((".ts", ".sh")) or "convex_local" in name]
