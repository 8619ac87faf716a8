"""Starting walletd's own code as a child process: serve's flush process (and, the
same way, the bench's and the tests' walletd processes).

`python -m app.cli` puts the working directory first on sys.path: started from a
folder that holds some other `app/` package, the child would import that one. -P
(Python 3.11) leaves the working directory out; the child then finds `app` where
this process found it: in site-packages (an installed walletd), or from the root
this process imported it from, put on the child's PYTHONPATH (a source checkout).
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Mapping
from pathlib import Path

import app


def command(module: str, *args: str) -> list[str]:
    """argv for `python -P -m module args...` with this process's interpreter."""
    assert module == "app" or module.startswith(("app.", "bench.")), module
    return [sys.executable, "-P", "-m", module, *args]


def package_root() -> str:
    """The directory this process imported the `app` package from."""
    return str(Path(app.__file__).resolve().parent.parent)


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """base (default: this process's environment) with PYTHONPATH leading to this
    process's `app`, unless the child finds it in site-packages anyway (putting
    site-packages ahead of the standard library could shadow it)."""
    env = dict(os.environ if base is None else base)
    root = package_root()
    site_dirs = {str(Path(d).resolve()) for d in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(part for part in (root, env.get("PYTHONPATH", "")) if part)
    return env
