"""Each component folder is a distribution that declares exactly what its code imports.

An image installs one component's distributions and nothing else (the Dockerfiles), so an import
not covered by a declared dependency would fail only in the image: these tests find it here. The
import-boundary tests run the lean programs in a fresh interpreter where the heavy or foreign
packages cannot be imported at all.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from fnmatch import fnmatch
from functools import cache
from pathlib import Path

import pytest

from kamus_client.version import VERSION

ROOT = Path(__file__).resolve().parents[3]
COMPONENTS = (
    "kms",
    "client",
    "service",
    "encryptor",
    "decryptor",
    "init-container",
    "cli",
    "devtools",
)


def _project(folder: str) -> dict[str, object]:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text("utf-8"))["project"]  # type: ignore[no-any-return]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])


@cache
def _closure(distribution: str) -> frozenset[str]:
    """The distribution and everything it requires, with every extra, as installed here."""
    seen: set[str] = set()
    pending = [_normal(distribution)]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        pending += [_requirement_name(requirement) for requirement in requirements]
    return frozenset(seen)


def _imports(package_dir: Path) -> set[str]:
    found: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"_typeshed"}


def _package_of(folder: str) -> str:
    include = tomllib.loads((ROOT / folder / "pyproject.toml").read_text("utf-8"))
    return str(include["tool"]["setuptools"]["packages"]["find"]["include"][0]).rstrip("*")


@pytest.mark.parametrize("folder", COMPONENTS)
def test_every_import_is_provided_by_a_declared_dependency(folder: str) -> None:
    project = _project(folder)
    declared = [*project.get("dependencies", [])]  # type: ignore[misc]
    for extra in (project.get("optional-dependencies") or {}).values():  # type: ignore[attr-defined]
        declared += extra
    provided = {_normal(str(project["name"]))}
    for requirement in declared:
        provided |= _closure(_requirement_name(requirement))
    owners = importlib.metadata.packages_distributions()
    package = _package_of(folder)
    missing = {
        module: owners.get(module)
        for module in _imports(ROOT / folder / package)
        if module != package and not {_normal(d) for d in owners.get(module, [])} & provided
    }
    assert missing == {}


def test_no_production_distribution_depends_on_the_development_tools() -> None:
    for folder in COMPONENTS:
        if folder == "devtools":
            continue
        project = _project(folder)
        assert "kamus-dev" not in _closure(str(project["name"])), folder


def test_every_distribution_has_the_clients_version() -> None:
    versions = {folder: _project(folder)["version"] for folder in COMPONENTS}
    assert set(versions.values()) == {VERSION}, versions
    pins = [
        requirement
        for folder in COMPONENTS
        for requirement in _project(folder).get("dependencies", [])  # type: ignore[attr-defined]
        if requirement.startswith("kamus-")
    ]
    assert pins
    assert all(pin.endswith(f"=={VERSION}") for pin in pins), pins


def test_each_dockerfile_installs_only_its_components_distributions() -> None:
    expected = {
        "init-container": ["./client", "./init-container"],
        "cli": ["./client", "./kms", "./cli"],
        "encryptor": [
            '"./kms[gcp,aws,pkcs11,vault,azure]"',
            "./client",
            "./service",
            "./encryptor",
        ],
        "decryptor": [
            '"./kms[gcp,aws,pkcs11,vault,azure]"',
            "./client",
            "./service",
            "./decryptor",
        ],
    }
    for component, targets in expected.items():
        dockerfile = (ROOT / component / "Dockerfile").read_text("utf-8")
        install = re.search(r"RUN pip install --no-cache-dir --prefix=/install (.+)", dockerfile)
        assert install is not None, component
        assert install.group(1).split() == targets, component
        copied = re.findall(r"^COPY (\S+)/ \1/$", dockerfile, re.MULTILINE)
        assert copied == [target.strip('"./').split("[")[0] for target in targets], component


@pytest.mark.parametrize("folder", COMPONENTS)
def test_every_data_file_of_a_package_is_in_its_distribution(folder: str) -> None:
    # An editable install serves every file from the checkout; an image's wheel holds only what
    # package-data names (the encrypt page's HTML, script and style, py.typed).
    settings = tomllib.loads((ROOT / folder / "pyproject.toml").read_text("utf-8"))["tool"]
    package_data: dict[str, list[str]] = settings["setuptools"].get("package-data", {})
    package = _package_of(folder)
    package_dir = ROOT / folder / package
    patterns = package_data.get("*", []) + package_data.get(package, [])
    data_files = [
        path.relative_to(package_dir).as_posix()
        for path in package_dir.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    missing = [name for name in data_files if not any(fnmatch(name, p) for p in patterns)]
    assert missing == []
