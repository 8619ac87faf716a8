"""The one front for every platform protocol: a registry of paths to raw ASGI
handlers, in front of the Starlette app that serves everything else (/healthz,
ping, the admin API, start-up and shutdown).

Callbacks skip Starlette's middleware, routing, Request and Response objects
(measured: README "Benchmarks"). Each protocol package names its own paths
(`callbacks()` on its handler); adding a protocol adds its entries here, nothing
else. A callback handler never lets an exception out: it answers in its
protocol's own way (OP_50, {"status":"fail"}) itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.asgi import Handler, Receive, Scope, Send


@dataclass(frozen=True)
class Callback:
    """path: an exact path, or with prefix=True (path ending in '/') a prefix
    followed by one path segment (OIA's POST <path>/<command>). A configured exact
    path may end in '/' too (stargame.path = "/stargame/"): it stays exact, as its
    Starlette route was. methods: those the handler takes; None for all, when the
    protocol answers a wrong method itself."""

    path: str
    handler: Handler
    methods: frozenset[str] | None = None
    prefix: bool = False

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
    def __init__(self, app: Handler, callbacks: Iterable[Callback]) -> None:
        self.app = app
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

    def find(self, method: str, path: str) -> Handler | None:
        callback = self.exact.get(path)
        if callback is None:
            for prefixed in self.prefixes:
                if path.startswith(prefixed.path) and "/" not in path[len(prefixed.path):]:
                    callback = prefixed
                    break
        if callback is None or not callback.takes(method):
            return None
        return callback.handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.find(scope["method"], scope["path"])
            if handler is not None:
                return await handler(scope, receive, send)
        return await self.app(scope, receive, send)
