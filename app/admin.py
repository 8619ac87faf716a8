"""walletd's own admin API (Bearer token from [admin]): POST /admin/players, POST /admin/sessions."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from app import currency
from app.asgi import BodyTooLarge, headers_of, read_body
from app.errors import WalletCallError
from app.ids import PLAYER_ID
from app.ledger.guard import ColdStart
from app.money import AmountError, decimal_to_minor
from app.protocols.oia.wallet import OiaWallet
from app.responses import JSON
from app.sessions import DEVICES, launch_urls
from app.settings import AdminSettings, OiaSettings, OperatorSettings
from app.wallet import WalletConflict, WalletError

log = logging.getLogger("walletd.admin")

# An admin request is a few short fields; a larger body is refused, not read on.
BODY_BYTES_MAX = 16 * 1024
LaunchText = Annotated[str, Meta(max_length=500, pattern=r"^[^|]*$")]
PlayerId = Annotated[str, Meta(pattern=f"^{PLAYER_ID.pattern}$")]


class PlayerRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /admin/players: the fields of `walletd player create`, same rules."""

    player_id: PlayerId
    currency: str
    balance: str = "0"  # a decimal string in the currency's unit, e.g. "100.00"
    country: str = ""
    language: str = "en"
    name: str = ""
    aliases: list[str] = []
    operator_id: str | None = None


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    player_id: PlayerId
    game_id: Annotated[int, Meta(ge=0, lt=10**6)] | None = None  # the seed's INT 6
    lobby_id: Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    operator_id: str | None = None
    home_url: LaunchText = ""
    device: str = ""
    fun: bool = False


class AdminError(ValueError):
    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


SessionError = AdminError  # the name the CLI imports


def pick_operator(oia: OiaSettings, operator_id: str | None) -> OperatorSettings:
    if operator_id is None:
        if len(oia.operators) != 1:
            raise SessionError("operator_id is required: oia.operators does not hold exactly one operator")
        return oia.operators[0]
    for operator in oia.operators:
        if operator.id == operator_id:
            return operator
    raise SessionError(f"unknown operator {operator_id!r}")


def pick_owner(oia: OiaSettings, operator_id: str | None) -> str:
    """The operator a new player belongs to: the one named (it must be configured),
    else the only one configured; '' (no owner) only when none is configured."""
    if operator_id is None and not oia.operators:
        return ""
    if operator_id is None and len(oia.operators) > 1:
        names = ", ".join(op.id for op in oia.operators)
        raise AdminError(f"the owning operator is required (--operator, or operator_id in the admin API): "
                         f"several are configured ({names})")
    return pick_operator(oia, operator_id).id


async def create_player(wallet: OiaWallet, oia: OiaSettings, req: PlayerRequest) -> dict[str, Any]:
    """Shared by the admin API and `walletd player create`."""
    owner = pick_owner(oia, req.operator_id)
    try:
        opening = decimal_to_minor(req.balance, currency.exponent(req.currency), "balance")
        entry = await wallet.wallet.create_player(req.player_id, req.currency, opening, req.country,
                                                  req.language, req.name, req.aliases, operator_id=owner)
    except WalletConflict as exc:
        raise AdminError(str(exc), status_code=409) from exc
    except (WalletError, AmountError, currency.CurrencyError) as exc:
        raise AdminError(str(exc)) from exc
    return {"player_id": req.player_id, "operator_id": owner, "currency": req.currency,
            "balance": req.balance, "aliases": req.aliases, "entry_id": entry}


async def session_operator(wallet: OiaWallet, oia: OiaSettings, req: SessionRequest) -> OperatorSettings:
    """The operator named, else (with several configured) the player's owner: the only
    operator the player may play under."""
    operator_id = req.operator_id
    if operator_id is None and len(oia.operators) > 1:
        profile = await wallet.wallet.profile(req.player_id)
        if profile is None:
            raise AdminError(f"unknown player {req.player_id}", status_code=404)
        operator_id = wallet.owner_of(profile) or None  # (no implied owner with several operators)
    return pick_operator(oia, operator_id)


async def open_session(wallet: OiaWallet, oia: OiaSettings, req: SessionRequest) -> dict[str, Any]:
    """Shared by the admin API and `walletd session new`."""
    if (req.game_id is None) == (req.lobby_id is None):
        raise SessionError("give exactly one of game_id and lobby_id")
    if req.device and req.device not in DEVICES:
        raise SessionError("device must be desktop or mobile")
    operator = await session_operator(wallet, oia, req)
    game = "" if req.game_id is None else str(req.game_id)
    lobby = req.lobby_id or ""
    try:
        token, currency_code, language = await wallet.open_session(operator.id, req.player_id, game, lobby)
    except KeyError:
        raise SessionError(f"unknown player {req.player_id}", status_code=404) from None
    except PermissionError:
        raise SessionError(f"player {req.player_id} belongs to another operator than {operator.id} "
                           "(or to none: README \"Operator ownership\")", status_code=403) from None
    target = ("game_id", game) if game else ("lobby_id", lobby)
    urls = launch_urls(oia, operator.id, target, token, currency_code, language, req.home_url, req.device, req.fun)
    return {"token": token, "player_id": req.player_id, "operator_id": operator.id,
            "game_id": req.game_id, "lobby_id": req.lobby_id, "currency": currency_code,
            "idle_expiry_s": oia.session_idle_s, **urls}


class Admin:
    def __init__(self, wallet: OiaWallet, oia: OiaSettings, settings: AdminSettings, guard: ColdStart) -> None:
        self.wallet = wallet
        self.oia = oia
        # While it refuses (Redis behind the store) nothing is written: a player created on
        # an empty Redis would take ledger entry ids the store already holds.
        self.guard = guard
        self.expected = f"Bearer {settings.token}".encode() if settings.token else None

    def authorized(self, request: Request) -> bool:
        given = request.headers.get("authorization")
        return self.expected is not None and given is not None and hmac.compare_digest(self.expected, given.encode())

    async def sessions(self, request: Request) -> Response:
        async def work(body: bytes) -> dict[str, Any]:
            return await open_session(self.wallet, self.oia, msgspec.json.decode(body, type=SessionRequest))

        return await self.serve(request, "sessions", work)

    async def players(self, request: Request) -> Response:
        async def work(body: bytes) -> dict[str, Any]:
            return await create_player(self.wallet, self.oia, msgspec.json.decode(body, type=PlayerRequest))

        return await self.serve(request, "players", work)

    async def serve(self, request: Request, name: str, work: Callable[[bytes], Awaitable[dict[str, Any]]]) -> Response:
        if not self.authorized(request):
            return JSON({"error": "missing or wrong Bearer token (or [admin] token not set)"}, status_code=401)
        if self.guard.refusal:
            return JSON({"error": f"refused, nothing written: {self.guard.refusal}"}, status_code=503)
        try:
            body = await read_body(request.receive, headers_of(request.scope), BODY_BYTES_MAX)
            return JSON(await work(body), status_code=201)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return JSON({"error": str(exc)}, status_code=400)
        except BodyTooLarge as exc:
            return JSON({"error": str(exc)}, status_code=413)
        except AdminError as exc:
            return JSON({"error": str(exc)}, status_code=exc.status_code)
        except (WalletCallError, OSError) as exc:
            log.error("admin %s: wallet unavailable: %s", name, exc)
            return JSON({"error": "wallet unavailable"}, status_code=503)
