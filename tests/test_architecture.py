"""The layers hold: imports flow one way (README, "Architecture"), checked by import-linter.

`lint-imports` reads the contracts in pyproject.toml. These tests run it on the real tree
and on scratch copies with an upward import or a cycle added, so a contract that stopped
catching anything would fail here too.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "avatar"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install '.[test]')"
)


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the package in `tree`, with that tree's own pyproject contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    shutil.copytree(PACKAGE, tmp_path / "avatar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8")
    anchor = "from __future__ import annotations\n"
    path.write_text(text.replace(anchor, anchor + line + "\n", 1), encoding="utf-8")


def test_the_tree_keeps_its_layers_and_has_no_cycles() -> None:
    result = lint(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(scratch: Path) -> None:
    # hardware (the bottom layer) reaching up into the command line
    add_line(scratch / "avatar" / "hardware" / "types.py", "import avatar.cli.tables  # noqa")

    result = lint(scratch)

    assert result.returncode != 0
    assert "Layers: entry points" in result.stdout and "BROKEN" in result.stdout
    assert "avatar.hardware.types -> avatar.cli.tables" in result.stdout


def test_a_cycle_between_sibling_modules_breaks_the_acyclic_contract(scratch: Path) -> None:
    # config.files is imported by config.compose; importing it back closes a cycle
    add_line(scratch / "avatar" / "config" / "files.py", "import avatar.config.compose  # noqa")

    result = lint(scratch)

    assert result.returncode != 0
    assert "No import cycles" in result.stdout and "BROKEN" in result.stdout


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)


def test_no_module_of_the_package_imports_the_package_root() -> None:
    """The root re-exports every layer, so importing it from inside would import upward."""
    offenders = []
    for path in package_modules():
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "avatar" and node.level == 0:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name == "avatar" for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_lazy_imports_are_only_for_heavy_or_optional_modules() -> None:
    """An import inside a function is allowed to keep torch (and such) off the status path,
    never to hide a cycle between avatar's own modules."""
    lazy_avatar_imports = []
    for path in package_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                if any(n == "avatar" or n.startswith("avatar.") for n in names):
                    lazy_avatar_imports.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert lazy_avatar_imports == []


def test_every_subpackage_ships_in_the_wheel() -> None:
    """pyproject lists the packages by hand (conf/ is mapped to avatar.conf): a new layer or
    stage folder missing from that list would work in a checkout and vanish from the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI and README use 3.11

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def _readme_tree() -> dict[str, set[str]]:
    """README's Architecture tree: package path (e.g. "avatar/config") -> the names listed
    in it (modules without `.py`, subpackages without `/`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        names = [w for w in line.split() if w.endswith((".py", "/"))]
        if not names or not line.strip().startswith(names[0]):
            continue  # a description's continuation line
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        for name in names:
            listed.setdefault(parent, set()).add(name.removesuffix(".py").rstrip("/"))
        if names[0].endswith("/"):
            stack.append((indent, f"{parent}/{names[0].rstrip('/')}".lstrip("/")))
    return listed


def test_readme_architecture_lists_every_module_where_it_lives() -> None:
    """README's tree is the map of the code: a module added without a line there (or one
    moved or removed and still listed) fails here."""
    listed = _readme_tree()
    actual: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if "__pycache__" in relative.parts or path.name == "__init__.py":
            continue
        actual.setdefault(relative.parent.as_posix(), set()).add(path.stem)
    for package in PACKAGE.rglob("*"):
        if package.is_dir() and (package / "__init__.py").is_file():
            relative = package.relative_to(ROOT)
            actual.setdefault(relative.parent.as_posix(), set()).add(relative.name)

    for package, names in sorted(actual.items()):
        shims = {"__init__", "__main__"}  # a subpackage's `python -m` shim: its line says so
        missing = names - listed.get(package, set()) - shims
        assert not missing, f"README's Architecture tree lacks {sorted(missing)} in {package}/"
    for package, names in sorted(listed.items()):
        if package.startswith("avatar"):
            gone = names - actual.get(package, set()) - {"__init__"}
            assert not gone, f"README's Architecture tree lists {sorted(gone)} in {package}/"
