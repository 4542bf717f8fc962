"""The package's layout rules (docs/architecture.md): small rooms, one name per idea, tests that
mirror the package. The import contracts themselves are checked by ``lint-imports`` (make test)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "erzy_pipelines"
TESTS = ROOT / "erzy_pipelines_tests"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: Modules kept at an old address because users' files name it (workspace.yaml, dagster.yaml).
PUBLIC_PATH_SHIMS = {PACKAGE / "definitions.py", PACKAGE / "runtime" / "launcher.py"}
#: A function longer than the limit says why in a comment among its first lines.
REASON = re.compile(r"#\s*long:", re.IGNORECASE)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_above_the_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_no_function_is_long_without_a_reason_at_its_top() -> None:
    long = []
    for path in _modules():
        source = path.read_text().splitlines()
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            top = "\n".join(source[node.lineno - 1 : node.lineno + 12])
            if length > MAX_FUNCTION_LINES and not REASON.search(top):
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert not long, "functions above 80 lines with no '# long:' reason: " + ", ".join(long)


def test_no_two_public_functions_or_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        for node in _tree(path).body:
            is_def = isinstance(node, ast.FunctionDef | ast.ClassDef)
            if is_def and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not shared


def test_no_two_modules_share_a_file_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        if path.name != "__init__.py" and path not in PUBLIC_PATH_SHIMS:
            where[path.name].append(str(path.relative_to(PACKAGE)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not shared


def test_the_shims_only_re_export() -> None:
    for path in PUBLIC_PATH_SHIMS:
        body = [n for n in _tree(path).body if not isinstance(n, ast.Expr)]  # docstring
        kinds = {type(n) for n in body} - {ast.ImportFrom, ast.Assign}
        assert not kinds, f"{path.name} should only re-export"


def test_the_tests_mirror_the_packages() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    packages -= {"runtime"}  # a public-path shim only
    missing = {name for name in packages if not (TESTS / name / "__init__.py").exists()}
    assert not missing, f"no test folder for {sorted(missing)}"
