"""The environment is pinned in one place (pyproject.toml) and environment.yml repeats it exactly.

pyproject.toml pins every dependency (``name==version``) in ``[project] dependencies`` and the
``dev`` extra; environment.yml (for conda users) lists the same pins under ``pip:`` and asks for
Python 3.11. These tests fail as soon as the two drift apart, so a version bump has to touch both.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml  # PyYAML, installed as a dependency of papermill
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _environment() -> dict:
    with (REPO / "environment.yml").open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def pyproject_requirements() -> list[str]:
    """Return the requirement strings of ``dependencies`` plus the ``dev`` extra, in file order."""
    project = _pyproject()["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def exact_pins(requirements: list[str], source: str) -> dict[str, str]:
    """Map canonical package name -> pinned version for requirement strings that must all be ``==``.

    Raises AssertionError naming the requirement and ``source`` when one is not an exact pin or a
    package is listed twice.
    """
    pins: dict[str, str] = {}
    for text in requirements:
        req = Requirement(text)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{source}: {text!r} is not an exact pin; pin it as name==X.Y.Z"
        )
        name = canonicalize_name(req.name)
        assert name not in pins, f"{source}: {req.name} is listed twice"
        pins[name] = specs[0].version
    return pins


def environment_pip_requirements(env: dict) -> list[str]:
    """Return the strings under the ``- pip:`` entry of environment.yml's dependencies."""
    lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(lists) == 1, "environment.yml needs exactly one `- pip:` list under dependencies"
    return lists[0]


def environment_conda_python(env: dict) -> str:
    """Return the conda match spec version of ``python`` in environment.yml (e.g. ``3.11``)."""
    specs = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python\s*[=<>!]", d)]
    assert len(specs) == 1, f"environment.yml must list python exactly once, found {specs}"
    return re.sub(r"^python\s*=+\s*", "", specs[0]).strip()


def test_every_pyproject_dependency_is_pinned_exactly():
    pins = exact_pins(pyproject_requirements(), "pyproject.toml")
    assert len(pins) >= 10, f"suspiciously few pinned packages in pyproject.toml: {sorted(pins)}"


def test_environment_yml_pins_the_same_packages_and_versions_as_pyproject():
    pyproject = exact_pins(pyproject_requirements(), "pyproject.toml")
    conda = exact_pins(environment_pip_requirements(_environment()), "environment.yml")
    only_pyproject = {n: v for n, v in pyproject.items() if n not in conda}
    only_conda = {n: v for n, v in conda.items() if n not in pyproject}
    differing = {n: (pyproject[n], conda[n]) for n in pyproject.keys() & conda.keys() if pyproject[n] != conda[n]}
    assert not only_pyproject, f"pinned in pyproject.toml but missing from environment.yml: {only_pyproject}"
    assert not only_conda, f"pinned in environment.yml but missing from pyproject.toml: {only_conda}"
    assert not differing, f"versions differ (pyproject.toml, environment.yml): {differing}"


def test_both_files_ask_for_python_3_11():
    conda_python = environment_conda_python(_environment())
    assert conda_python in ("3.11", "3.11.*"), f"environment.yml asks for python={conda_python}, expected 3.11"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains("3.11.9"), f"requires-python {requires} excludes Python 3.11"
    assert not requires.contains("3.12.0") and not requires.contains("3.10.14"), (
        f"requires-python {requires} should allow Python 3.11 only, as environment.yml does"
    )


def test_tensorflow_is_pinned_to_a_2x_release_that_ships_keras_3():
    pins = exact_pins(pyproject_requirements(), "pyproject.toml")
    assert "tensorflow" in pins, "pyproject.toml does not pin tensorflow"
    tf = Version(pins["tensorflow"])
    assert tf.major == 2 and tf >= Version("2.16"), f"tensorflow=={tf}: the course needs 2.16 <= TF < 3 (Keras 3)"
    keras = pins.get("keras")
    assert keras and Version(keras).major == 3, f"keras must be pinned to 3.x, got {keras}"


@pytest.mark.parametrize("name", sorted(exact_pins(pyproject_requirements(), "pyproject.toml")))
def test_installed_package_matches_its_pin(name):
    pinned = exact_pins(pyproject_requirements(), "pyproject.toml")[name]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{name}=={pinned} is pinned but not installed; run `pip install -e '.[dev]'`")
    assert Version(installed) == Version(pinned), (
        f"{name} {installed} is installed but pyproject.toml pins {pinned}; run `pip install -e '.[dev]'`"
    )
