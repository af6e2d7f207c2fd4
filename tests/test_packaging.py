"""The package: pyproject.toml against requirements*.txt (Hugging Face Spaces and ``make`` install
those), the console entry point, and scripts run from the repository root without path patches."""

import importlib
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from conftest import REPO

tomllib = pytest.importorskip("tomllib")

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements_file(name: str) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines())
    return {(requirement := Requirement(line)).name.lower(): requirement for line in lines if line}


def project_requirements(*groups: str) -> dict[str, Requirement]:
    listed = PROJECT["dependencies"] if "core" in groups else []
    listed += [entry for group in groups if group != "core" for entry in PROJECT["optional-dependencies"][group]]
    return {(requirement := Requirement(entry)).name.lower(): requirement for entry in listed if not entry.startswith("segmodels[")}


def assert_same_requirements(pinned: dict[str, Requirement], declared: dict[str, Requirement]) -> None:
    """Same names; a pinned version (==) lies in the declared range, any other range is the same."""
    assert sorted(pinned) == sorted(declared)
    for name, requirement in pinned.items():
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if versions:
            assert declared[name].specifier.contains(versions[0]), f"{requirement} is outside pyproject.toml's {declared[name]}"
        else:
            assert requirement.specifier == declared[name].specifier, f"requirements: {requirement}, pyproject.toml: {declared[name]}"


def test_requirements_txt_lists_the_library_and_the_app_dependencies_of_pyproject():
    assert_same_requirements(requirements_file("requirements.txt"), project_requirements("core", "onnx", "app"))


def test_requirements_dev_txt_lists_the_dev_extra():
    """The dev extra takes the app's dependencies from ``segmodels[app]``; requirements-dev.txt adds the rest."""
    app = requirements_file("requirements.txt")
    dev_only = {name: requirement for name, requirement in requirements_file("requirements-dev.txt").items() if name not in app}
    assert_same_requirements(dev_only, project_requirements("dev"))


def test_the_console_entry_point_is_the_cli(capsys):
    module, _, function = PROJECT["scripts"]["segmodels"].partition(":")
    with pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module), function)(["--help"])
    assert exit_info.value.code == 0 and "{train,evaluate,bench,export" in capsys.readouterr().out


def test_a_script_runs_from_the_repository_root():
    """``python scripts/NAME.py`` finds segmodels through the installed package, not a sys.path patch."""
    if subprocess.run([sys.executable, "-c", "import segmodels"], cwd="/", capture_output=True).returncode != 0:
        pytest.skip("the package is not installed (make setup runs pip install -e .)")
    result = subprocess.run([sys.executable, "scripts/runtime_agreement.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
