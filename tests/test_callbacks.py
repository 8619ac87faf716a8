"""app/callbacks.py: which requests reach a protocol's raw handler and which Starlette."""

from __future__ import annotations

import pytest

from app.asgi import Handler, Receive, Scope, Send
from app.callbacks import Callback, Callbacks
from app.settings import Settings
from tests.support import serving


def named(name: str) -> Handler:
    """A raw handler that says who it is."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"who": name})

    return handler


FRONT = Callbacks(named("starlette"), [Callback("/oia/", named("oia"), frozenset({"POST"}), prefix=True),
                                       Callback("/stargame", named("stargame"))])


async def who(method: str, path: str, kind: str = "http") -> str:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await FRONT({"type": kind, "method": method, "path": path}, None, send)  # type: ignore[arg-type]
    return sent[0]["who"]


@pytest.mark.parametrize("method, path, expected", [
    ("POST", "/oia/changebalance", "oia"),
    ("POST", "/oia/", "oia"),  # no command: the OIA handler refuses it in its own words
    ("GET", "/oia/ping", "starlette"),  # a method the prefix does not take
    ("POST", "/oia/a/b", "starlette"),  # one segment after the prefix, no more
    ("GET", "/stargame", "stargame"),
    ("POST", "/stargame", "stargame"),  # StarGame answers a wrong method itself
    ("GET", "/stargame/", "starlette"),
    ("GET", "/stargamex", "starlette"),
    ("GET", "/healthz", "starlette"),
])
@pytest.mark.anyio
async def test_each_request_reaches_its_protocol_or_starlette(method: str, path: str, expected: str) -> None:
    assert await who(method, path) == expected


@pytest.mark.anyio
async def test_lifespan_and_websockets_go_to_starlette() -> None:
    assert await who("", "/stargame", kind="websocket") == "starlette"


def test_two_protocols_cannot_claim_one_path() -> None:
    with pytest.raises(AssertionError, match="two protocols claim /stargame"):
        Callbacks(named("starlette"), [Callback("/stargame", named("a")), Callback("/stargame", named("b"))])


@pytest.mark.anyio
async def test_a_configured_stargame_path_ending_in_a_slash_stays_one_path(settings: Settings, player: str) -> None:
    """Before the raw front, Starlette served stargame.path exactly; a path ending in '/'
    must not turn into a prefix that takes any segment after it."""
    settings.stargame.path = "/stargame/"
    async with serving(settings) as client:
        answered = await client.get("/stargame/", params={"cmd": "getBalance", "uid": player})
        assert answered.json()["status"] == "success"
        other = await client.get("/stargame/anything", params={"cmd": "getBalance", "uid": player})
        assert other.status_code == 404
        assert other.text == "Not Found"
