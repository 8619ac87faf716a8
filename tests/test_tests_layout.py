"""The test suite's own layout: shared helpers live in support.py and the helper modules,
conftest.py holds fixtures only, and no module imports conftest or a test file (pytest
imports those itself; importing them again runs their module code twice and hides
which helpers are shared); and every test that starts processes carries the `slow`
mark, so `pytest -m "not slow"` is the fast subset the README promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.glob("*.py"))
TEST_FILES = sorted(TESTS.glob("test_*.py"))


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module an import statement names, anywhere in the file (inline imports too);
    `from tests import x` and `from . import x` count as importing tests.x."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("tests" if node.level else "") + ("." if node.level and node.module else "") + (node.module or "")
            names.append(base)
            if base == "tests":
                names += [f"tests.{alias.name}" for alias in node.names]
    return names


def forbidden(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def test_the_rule_sees_every_way_of_importing_a_test_file() -> None:
    source = ("import tests.test_a\nfrom tests.conftest import X\nfrom tests import test_b\n"
              "from .test_c import y\ndef f():\n    from conftest import Z\n"
              "from tests.support import OPERATOR\nimport pytest\n")
    assert [m for m in imported_modules(ast.parse(source)) if forbidden(m)] == [
        "tests.test_a", "tests.conftest", "tests.test_b", "tests.test_c", "conftest"]


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_module_imports_conftest_or_a_test_file(path: Path) -> None:
    imports = imported_modules(ast.parse(path.read_text(), str(path)))
    assert [m for m in imports if forbidden(m)] == [], f"{path.name}: import it from tests/support.py instead"


def test_conftest_holds_fixtures_only() -> None:
    tree = ast.parse((TESTS / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.name.startswith("pytest_") or any(is_fixture(d) for d in node.decorator_list), (
                f"conftest.py: {node.name} is not a fixture; shared helpers go in tests/support.py")
        else:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr)), (
                f"conftest.py line {node.lineno}: only imports and fixtures; constants go in tests/support.py")


def is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in ("pytest.fixture", "fixture")


# What makes a test a process test: it (or a fixture or helper of its module that it uses)
# starts walletd (process.Server, process.walletd), a redis-server or PostgreSQL of its own, or signals one.
PROCESS_NAMES = {"Server", "walletd", "private_redis", "PrivateRedis", "EmbeddedRedis", "subprocess", "killpg", "kill",
                 "private_postgres", "PrivatePostgres"}


def process_tests(tree: ast.Module) -> set[str]:
    """The module's test functions that start or signal processes, directly or through a
    module-level fixture or helper (named as a parameter or called)."""
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    uses = {name: names_in(node) | {a.arg for a in node.args.args} for name, node in functions.items()}
    starting = {name for name, node in functions.items() if names_in(node) & PROCESS_NAMES}
    for _ in functions:  # reach helpers of helpers; bounded by the number of functions
        starting |= {name for name in functions if uses[name] & starting}
    return {name for name in starting if name.startswith("test_")}


def names_in(node: ast.AST) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr
            for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}


def marked_slow(decorators: list[ast.expr]) -> bool:
    return any("pytest.mark.slow" in ast.unparse(d) for d in decorators)


def test_the_process_rule_follows_fixtures_and_helpers() -> None:
    source = ("def start(): Server()\n@pytest.fixture\ndef server(): return start()\n"
              "def test_a(server): pass\ndef test_b(): pass\ndef test_c(): subprocess.run([])\n")
    assert process_tests(ast.parse(source)) == {"test_a", "test_c"}


@pytest.mark.parametrize("path", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_process_tests_are_marked_slow(path: Path) -> None:
    """`pytest -m "not slow"` (README) must leave out every test that starts processes."""
    tree = ast.parse(path.read_text(), str(path))
    module_marked = any(isinstance(n, ast.Assign) and any(ast.unparse(t) == "pytestmark" for t in n.targets)
                        and "pytest.mark.slow" in ast.unparse(n.value) for n in tree.body)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    unmarked = [name for name in sorted(process_tests(tree))
                if not module_marked and not marked_slow(functions[name].decorator_list)]
    assert unmarked == [], f"{path.name}: mark these @pytest.mark.slow"
