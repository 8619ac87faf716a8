"""pyproject.toml ships every package under app/ and the top-level lua/ as app/lua, the
way app/scripts.py reads it from an installed wheel (.ci/wheel_check.py builds and runs one)."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_under_app_is_listed() -> None:
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "app").rglob("__init__.py")}
    assert set(SETUPTOOLS["packages"]) == found | {"app.lua"}


def test_lua_is_mapped_into_the_package() -> None:
    assert SETUPTOOLS["package-dir"] == {"app.lua": "lua"}
    assert not (ROOT / "app" / "lua").exists()  # one copy of the scripts: the top-level lua/


def test_every_lua_file_is_package_data() -> None:
    patterns = SETUPTOOLS["package-data"]["app.lua"]
    for path in (ROOT / "lua").rglob("*.lua"):
        name = path.relative_to(ROOT / "lua").as_posix()
        assert any(fnmatch.fnmatch(name, p) and name.count("/") == p.count("/") for p in patterns), name


@pytest.mark.slow
def test_the_wheel_check_cannot_pass_with_its_asserts_stripped() -> None:
    """.ci/wheel_check.py checks with assert: under -O (PYTHONOPTIMIZE in a CI's
    environment) it would report success for any wheel, so it refuses to run."""
    done = subprocess.run([sys.executable, "-O", str(ROOT / ".ci" / "wheel_check.py")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "without -O" in done.stderr


def test_every_module_under_app_is_in_the_readme_layout() -> None:
    """README "Layout" names each module by its file name (a package's own files in its rows)."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("\n## Layout\n"):readme.index("\n## Benchmarks\n")]
    missing = [str(module.relative_to(ROOT)) for module in sorted((ROOT / "app").rglob("*.py"))
               if module.name != "__init__.py" and module.name not in layout]
    assert missing == []
