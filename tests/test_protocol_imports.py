"""The protocols speak app/errors.py's kinds: no module under app/protocols imports
redis-py (its exceptions come to them converted by the client layer)."""

from __future__ import annotations

import ast
from pathlib import Path

import app.protocols

PROTOCOLS = Path(app.protocols.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_check_sees_every_protocol_module() -> None:
    modules = {path.relative_to(PROTOCOLS).as_posix() for path in PROTOCOLS.rglob("*.py")}
    assert {"oia/handler.py", "oia/wallet.py", "stargame/handler.py", "stargame/wallet.py"} <= modules


def test_no_protocol_module_imports_redis() -> None:
    offenders = {
        f"{path.relative_to(PROTOCOLS)}: {name}"
        for path in PROTOCOLS.rglob("*.py")
        for name in imported_modules(path)
        if name == "redis" or name.startswith("redis.")
    }
    assert not offenders


def test_the_check_would_see_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom redis.exceptions import RedisError\n")
    assert "redis.exceptions" in imported_modules(module)
