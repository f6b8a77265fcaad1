"""The newcomer path stays consistent: pyproject, environment.yml, Makefile, CI and README agree.

Conda/Binder users get their packages from environment.yml, pip users from
pyproject.toml; if the two drift, the two groups silently run different courses.
"""

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml  # PyYAML: pulled in by jupyterlab (jupyter_server -> jupyter_events)
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# The one non-requirement line environment.yml may carry: installing course_lib itself.
LOCAL_INSTALL = "-e ."


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _environment() -> dict:
    with open(ROOT / "environment.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def _conda_deps() -> list[str]:
    return [d for d in _environment()["dependencies"] if isinstance(d, str)]


def _pip_lines() -> list[str]:
    """The strings in environment.yml's `pip:` section."""
    sections = [d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict)]
    assert len(sections) == 1, "environment.yml should have exactly one `pip:` section"
    return [str(line).strip() for line in sections[0]]


def _index(requirements: list[str], where: str) -> dict[str, str]:
    """Map normalized package name -> normalized requirement (extras, specifiers, marker)."""
    out: dict[str, str] = {}
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name not in out, f"{where}: {name} is listed twice"
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        out[name] = f"{extras}{req.specifier}{marker}"
    return out


def _runtime() -> dict[str, str]:
    return _index(_pyproject()["project"]["dependencies"], "pyproject [project].dependencies")


def _dev() -> dict[str, str]:
    extras = _pyproject()["project"]["optional-dependencies"]
    return _index(extras["dev"], "pyproject [project.optional-dependencies].dev")


def _env_pip() -> dict[str, str]:
    reqs = [line for line in _pip_lines() if line != LOCAL_INSTALL]
    return _index(reqs, "environment.yml pip section")


def _describe(label: str, expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Name each package missing from environment.yml or pinned differently there."""
    problems = []
    for name, spec in sorted(expected.items()):
        if name not in actual:
            problems.append(
                f"{label} dependency {name}{spec} is in pyproject.toml "
                f"but missing from environment.yml"
            )
        elif actual[name] != spec:
            problems.append(
                f"{label} dependency {name}: pyproject.toml says {spec!r}, "
                f"environment.yml says {actual[name]!r}"
            )
    return problems


def test_runtime_dependencies_match():
    problems = _describe("runtime", _runtime(), _env_pip())
    assert not problems, "\n".join(problems)


def test_dev_dependencies_match():
    problems = _describe("dev", _dev(), _env_pip())
    assert not problems, "\n".join(problems)


def test_environment_yml_lists_nothing_pyproject_lacks():
    declared = _runtime() | _dev()
    extra = {n: s for n, s in _env_pip().items() if n not in declared}
    problems = [
        f"{name}{spec} is in environment.yml but missing from pyproject.toml "
        f"(neither [project].dependencies nor the dev extra)"
        for name, spec in sorted(extra.items())
    ]
    assert not problems, "\n".join(problems)


def test_runtime_and_dev_do_not_overlap():
    both = sorted(set(_runtime()) & set(_dev()))
    assert not both, f"listed both as runtime and dev in pyproject.toml: {both}"


def test_environment_yml_installs_the_course_library():
    assert LOCAL_INSTALL in _pip_lines(), (
        f"environment.yml's pip section should end with {LOCAL_INSTALL!r} "
        "so that notebooks can import course_lib"
    )
    others = [line for line in _pip_lines() if line.startswith("-") and line != LOCAL_INSTALL]
    assert not others, f"unexpected pip options in environment.yml: {others}"


def test_environment_yml_channel_and_python_agree_with_pyproject():
    env = _environment()
    assert env["channels"] == ["conda-forge"]
    conda = _conda_deps()
    assert "pip" in conda, "environment.yml must install pip for its pip: section"
    pythons = [d for d in conda if re.fullmatch(r"python\s*=.*", d)]
    assert pythons == ["python=3.11"], f"expected python=3.11 in environment.yml, got {pythons}"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert Version("3.11") in requires, f"requires-python {requires} excludes 3.11"


def test_ci_runs_the_readme_test_command():
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK), ".ci/run must be executable"
    text = run.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash"), ".ci/run must be a bash script"
    assert "set -euo pipefail" in text
    commands = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert any(re.fullmatch(r"(exec\s+)?make test", c) for c in commands), (
        f".ci/run should call `make test`; its commands are {commands}"
    )


@pytest.mark.parametrize("command", ["make lab", "make test"])
def test_readme_gives_the_newcomer_commands(command):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert command in readme, f"README.md should tell newcomers to run `{command}`"


@pytest.mark.parametrize("target", ["setup", "lab", "test", "lint", "bench", "clean"])
def test_makefile_has_target(target):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile lacks `{target}:`"


def test_make_lab_opens_the_start_here_notebook():
    """`make lab` lands the learner on 00_start_here, which says where to go next."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    start = re.search(r'default_url="/lab/tree/([^"]+)"', recipe)
    assert start and start.group(1) == "notebooks/00_start_here.ipynb", recipe
    assert (ROOT / start.group(1)).is_file()
