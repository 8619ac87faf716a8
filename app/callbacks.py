"""The one front for every platform protocol: a registry of paths to raw ASGI
handlers, in front of the Starlette app that serves everything else (/healthz,
ping, the admin API, start-up and shutdown).

Callbacks skip Starlette's middleware, routing, Request and Response objects
(measured: README "Benchmarks"). Each protocol package names its own paths
(`callbacks()` on its handler); adding a protocol adds its entries here, nothing
else. A callback handler never lets an exception out: it answers in its
protocol's own way (OP_50, {"status":"fail"}) itself, and returns what it answered:
(command, outcome), counted here when metrics are on (app/callback_meter.py), so
every callback is timed from the moment the front has it until its answer is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from app.asgi import Handler, Receive, Scope, Send
from app.callback_meter import CallbackMeter

# What a callback handler answered: (its command as the request named it, its outcome key).
Answered = tuple[str, str]
CallbackHandler = Callable[[Scope, Receive, Send], Awaitable[Answered | None]]


@dataclass(frozen=True)
class Callback:
    """path: an exact path, or with prefix=True (path ending in '/') a prefix
    followed by one path segment (OIA's POST <path>/<command>). A configured exact
    path may end in '/' too (stargame.path = "/stargame/"): it stays exact, as its
    Starlette route was. methods: those the handler takes; None for all, when the
    protocol answers a wrong method itself. meter: the protocol's tallies, used when
    the front counts (metrics on)."""

    path: str
    handler: CallbackHandler
    methods: frozenset[str] | None = None
    prefix: bool = False
    meter: CallbackMeter | None = None

    def __post_init__(self) -> None:
        assert self.path.startswith("/"), self.path
        assert not self.prefix or self.path.endswith("/"), f"prefix {self.path} must end in '/'"

    def takes(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def overlaps(self, other: Callback) -> bool:
        """Whether a request path could be meant for both, whatever the methods: an exact
        path equal to a prefix's folder or under it ("/oia", "/oia/x" for prefix "/oia/"),
        as app/settings.py's check_paths refuses for the configured paths."""
        if self.prefix and other.prefix:
            return self.path.startswith(other.path) or other.path.startswith(self.path)
        if self.prefix or other.prefix:
            folder, exact = (self, other) if self.prefix else (other, self)
            return exact.path == folder.path[:-1] or exact.path.startswith(folder.path)
        return self.path == other.path


class Callbacks:
    def __init__(self, app: Handler, callbacks: Iterable[Callback], metered: bool = False) -> None:
        self.app = app
        self.metered = metered
        self.exact: dict[str, Callback] = {}
        prefixes: list[Callback] = []
        for callback in callbacks:
            # Overlapping paths would make one protocol's requests depend on lookup order.
            for taken in (*self.exact.values(), *prefixes):
                assert not callback.overlaps(taken), f"two protocols claim {callback.path} and {taken.path}"
            if callback.prefix:
                prefixes.append(callback)
            else:
                self.exact[callback.path] = callback
        self.prefixes = tuple(prefixes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # app.state, app.router: the Starlette app's

    def meters(self) -> list[CallbackMeter]:
        found = [callback.meter for callback in (*self.exact.values(), *self.prefixes) if callback.meter]
        return list(dict.fromkeys(found))  # one protocol may have several paths

    def find(self, method: str, path: str) -> Callback | None:
        callback = self.exact.get(path)
        if callback is None:
            for prefixed in self.prefixes:
                if path.startswith(prefixed.path) and "/" not in path[len(prefixed.path):]:
                    callback = prefixed
                    break
        if callback is None or not callback.takes(method):
            return None
        return callback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            callback = self.find(scope["method"], scope["path"])
            if callback is not None:
                meter = callback.meter
                if meter is None or not self.metered:
                    await callback.handler(scope, receive, send)
                    return None
                started = perf_counter()
                meter.in_flight += 1
                try:
                    answered = await callback.handler(scope, receive, send)
                finally:
                    meter.in_flight -= 1
                assert answered is not None, "a metered callback handler returns what it answered"
                meter.record(answered[0], answered[1], perf_counter() - started)
                return None
        return await self.app(scope, receive, send)
