"""app/callbacks.py: which requests reach a protocol's raw handler and which Starlette."""

from __future__ import annotations

import pytest

from app.asgi import Handler, Receive, Scope, Send
from app.callbacks import Callback, Callbacks
from app.settings import STARLETTE_PATHS, Settings, under
from app.web import create_app
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


@pytest.mark.parametrize("exact", ["/oia", "/oia/ping", "/oia/changebalance", "/oia/a/b"])
def test_an_exact_path_at_or_under_a_prefix_is_refused(exact: str) -> None:
    with pytest.raises(AssertionError, match="two protocols claim"):
        Callbacks(named("starlette"), [Callback("/oia/", named("oia"), frozenset({"POST"}), prefix=True),
                                       Callback(exact, named("stargame"))])


def test_nested_prefixes_are_refused() -> None:
    with pytest.raises(AssertionError, match="two protocols claim /oia/v2/ and /oia/"):
        Callbacks(named("starlette"), [Callback("/oia/", named("a"), prefix=True),
                                       Callback("/oia/v2/", named("b"), prefix=True)])


def test_paths_that_only_look_alike_may_both_be_registered() -> None:
    front = Callbacks(named("starlette"), [Callback("/oia/", named("oia"), prefix=True),
                                           Callback("/oiax", named("stargame")), Callback("/oi", named("c"))])
    assert [c.path for c in front.prefixes] == ["/oia/"]


def test_every_starlette_route_is_outside_what_a_protocol_may_configure(settings: Settings) -> None:
    """app/settings.py refuses protocol paths under STARLETTE_PATHS: that holds only while
    every Starlette route (besides OIA's ping) lies under one of them."""
    front = create_app(settings, "redis://127.0.0.1:1")
    paths = [route.path for route in front.app.routes]
    assert f"{settings.oia.path}/ping" in paths
    for path in paths:
        assert path == f"{settings.oia.path}/ping" or any(under(path, r) for r in STARLETTE_PATHS), path
