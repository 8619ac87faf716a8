"""A real `walletd serve` taking operators' secrets from the environment and from a file:
signed OIA calls are accepted with those secrets, refused with any other, and a weak one
stops the start."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.oia_calls import call, new_session, sha1
from tests.process import Server, walletd
from tests.support import ADMIN_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ENV_SECRET = "env-casino-key-0123456789"
FILE_SECRET = "file-casino-key-0123456789"


async def balance_as(client: httpx.AsyncClient, operator: str, secret: str, player: str) -> dict:
    """A player of operator, a session for them, and a signed balance call."""
    created = await client.post("/admin/players", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                json={"player_id": player, "currency": "EUR", "balance": "12.50",
                                      "operator_id": operator})
    assert created.status_code == 201, created.text
    token = await new_session(client, player, operator=operator)
    return await call(client, "balance", {"token": token, "user_id": player, "currency_code": "EUR"},
                      secret=secret, operator=operator)


async def test_secrets_from_the_environment_and_a_file_sign_real_calls(tmp_path: Path) -> None:
    secret_file = tmp_path / "file-casino.secret"
    secret_file.write_text(FILE_SECRET + "\n")
    extra = ('[[oia.operators]]\nid = "env-casino"\n'
             f'[[oia.operators]]\nid = "file-casino"\nsecret_key_file = "{secret_file}"\n')
    server = Server(tmp_path, extra=extra, env={"WALLETD_OIA_SECRET_ENV_CASINO": ENV_SECRET}).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for operator, secret, player in (("env-casino", ENV_SECRET, "env-player"),
                                             ("file-casino", FILE_SECRET, "file-player")):
                answer = await balance_as(client, operator, secret, player)
                assert answer["status"] == "OK" and answer["data"]["balance"] == 12.5, answer
                # The other operator's secret is not this one's: 403 before anything else.
                other = FILE_SECRET if secret == ENV_SECRET else ENV_SECRET
                refused = await client.post("/oia/balance", content=b"{}", headers={
                    "X-Operator-Id": operator, "X-Authorization": sha1("balance" + other)})
                assert refused.status_code == 403
    finally:
        server.stop()
    log = server.log.read_text()
    assert ENV_SECRET not in log and FILE_SECRET not in log


def test_serve_refuses_a_weak_secret_from_the_environment(tmp_path: Path) -> None:
    server = Server(tmp_path, extra='[[oia.operators]]\nid = "env-casino"\n',
                    env={"WALLETD_OIA_SECRET_ENV_CASINO": "weak-env-key"})
    refused = server.refused()
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "env-casino" in lines[0] and "shorter than 16" in lines[0]
    assert "weak-env-key" not in refused.stderr


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_admin_token_from_walletd_admin_token_file_opens_the_admin_api(tmp_path: Path, workers: int) -> None:
    """The token in a file named by the environment only (as a container's secret is), in
    every server process (workers > 1 load the configuration again); walletd healthcheck
    reads the same configuration and passes."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\r\n", newline="")
    server = Server(tmp_path, workers=workers, env={"WALLETD_ADMIN_TOKEN_FILE": str(token_file)})
    server.config.write_text(server.config.read_text().replace(f'token = "{ADMIN_TOKEN}"\n', ""))
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for _ in range(2 * workers):  # new connections: each may reach another worker
                created = await client.post("/admin/players", headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                                       "Connection": "close"},
                                            json={"player_id": f"p{_}", "currency": "EUR", "balance": "1.00"})
                assert created.status_code == 201, created.text
            refused = await client.post("/admin/players", headers={"Authorization": "Bearer " + "x" * 32},
                                        json={"player_id": "q", "currency": "EUR", "balance": "1.00"})
            assert refused.status_code in (401, 403), refused.text
        checked = walletd(server.config, "healthcheck", check=False, env={"WALLETD_ADMIN_TOKEN_FILE": str(token_file)})
        assert checked.returncode == 0, checked.stderr
    finally:
        server.stop()
    assert ADMIN_TOKEN not in server.log.read_text()
