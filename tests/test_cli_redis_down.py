"""CLI commands when Redis cannot be used: one line and exit 2, never a traceback
and never exit 1 (which says "refused", and for verify "the books do not match")."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.redis_server import free_port
from tests.process import walletd, write_config

pytestmark = pytest.mark.slow

EXIT_USAGE = 2


@pytest.mark.parametrize("command", [["verify"], ["player", "show", "p1"],
                                     ["player", "deposit", "p1", "1.00", "--ref", "r1"]])
def test_a_command_with_redis_down_exits_2_in_one_line(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path, free_port(), f"redis://:pw@127.0.0.1:{free_port()}/0", 40)
    result = walletd(config, *command, check=False, timeout_s=30)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("walletd: cannot use Redis: "), lines
    assert ":pw@" not in lines[0]
