"""The walletd command line: init, serve, flush, player ..., session new, verify, migrate, ledger copy, rebuild,
config check, info."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import msgspec
import uvloop
from redis.exceptions import RedisClusterException, RedisError

from app import config_show, currency, healthcheck, serve, settings as config, starter_config
from app.admin import AdminError, PlayerRequest, SessionRequest, create_player, open_session
from app.errors import WalletCallError
from app.instance import AlreadyRunning
from app.keys import Keys
from app.ledger import LedgerConflict, StoreUnavailable, copy as ledger_copy, migrate_store, open_store
from app.ledger.guard import FLUSHER_ROLE
from app.ledger.rebuild import RebuildRefused, rebuild
from app.ledger.verify import verify
from app.logformat import configure_logging
from app.logsafe import without_passwords
from app.money import AmountError, decimal_to_minor, minor_to_decimal
from app.partition_map import placement, render
from app.redis_client import connect
from app.redis_server import redis_url
from app.redis_topology import cluster_mode
from app.runtime import Runtime
from app.sessions import DEVICES
from app.settings import Settings
from app.version import version
from app.wallet import Wallet, WalletError

# Exit codes (README "Command line"): 0 done or stopped by SIGINT/SIGTERM.
EXIT_REFUSED = 1
EXIT_USAGE = 2  # bad configuration, or serve could not start
EXIT_RUNNING = 3  # serve: another walletd serve holds this data_dir


class Refusal(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    main = argparse.ArgumentParser(prog="walletd", parents=[common])
    main.add_argument("--version", action="version", version=f"walletd {version()}")
    commands = main.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", parents=[common], help="write a starter walletd.toml with fresh secrets")
    init.add_argument("--operator", default=starter_config.DEFAULT_OPERATOR, help="the operator id to configure")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    commands.add_parser("serve", parents=[common], help="HTTP server and flusher")
    flush_command = commands.add_parser("flush", parents=[common], help="run the flusher alone")
    flush_command.add_argument("--reconcile-only", action="store_true",
                               help="only the StarGame reconciler (serve's child when flusher.enabled = false)")
    commands.add_parser("verify", parents=[common], help="check Redis against the ledger store")
    commands.add_parser("rebuild", parents=[common], help="restore a Redis that lost its data from the ledger store")
    commands.add_parser("migrate", parents=[common], help="apply the ledger store's schema migrations, alone")
    add_info(commands, common)
    commands.add_parser("healthcheck", parents=[common],
                        help="GET /healthz of the configured server: exit 0 when healthy, else 1 (a container's probe)")
    player = commands.add_parser("player", help="player accounts").add_subparsers(dest="action", required=True)
    create = player.add_parser("create", parents=[common])
    create.add_argument("player_id")
    create.add_argument("--currency", required=True)
    create.add_argument("--balance", default="0")
    create.add_argument("--country", default="")
    create.add_argument("--language", default="en")
    create.add_argument("--name", default="")
    create.add_argument("--alias", action="append", default=[], help="e.g. stargame:117 (repeatable)")
    create.add_argument("--operator", help="owning operator id (required when several are configured)")
    player.add_parser("show", parents=[common]).add_argument("player_id")
    for action in ("deposit", "withdraw"):
        adjust = player.add_parser(action, parents=[common])
        adjust.add_argument("player_id")
        adjust.add_argument("amount", help="decimal, e.g. 25.00")
        adjust.add_argument("--ref", required=True, help="idempotency reference")
    for action in ("block", "unblock"):
        player.add_parser(action, parents=[common]).add_argument("player_id")
    session = commands.add_parser("session", help="game sessions").add_subparsers(dest="action", required=True)
    new = session.add_parser("new", parents=[common], help="open a session; prints token and launch URLs")
    new.add_argument("player_id")
    target = new.add_mutually_exclusive_group(required=True)
    target.add_argument("--game", type=int, help="platform game id")
    target.add_argument("--lobby", help="platform lobby id")
    new.add_argument("--operator", help="operator id (default: the only one configured)")
    new.add_argument("--home-url", default="")
    new.add_argument("--device", default="", choices=["", *DEVICES])
    new.add_argument("--fun", action="store_true", help="also print the fun-mode URL")
    configuration = commands.add_parser("config", help="the configuration")
    check = configuration.add_subparsers(dest="action", required=True).add_parser(
        "check", parents=[common], help="validate it as serve would; print it, secrets masked")
    check.add_argument("--format", choices=config_show.FORMATS, default="toml")
    ledger = commands.add_parser("ledger", help="the ledger store").add_subparsers(dest="action", required=True)
    copy = ledger.add_parser("copy", help="copy a ledger into another store (resumable; checks the result)")
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:///./var/ledger.db")
    copy.add_argument("--to", dest="destination", required=True, metavar="URL",
                      help="e.g. postgresql://walletd@db.example/walletd")
    copy.add_argument("--batch", type=int, default=ledger_copy.BATCH_DEFAULT,
                      help=f"entries per destination transaction (1..{ledger_copy.BATCH_MAX})")
    return main


def add_info(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    info = commands.add_parser("info", parents=[common],
                               help="version, Redis mode and nodes, which node holds each partition")
    info.add_argument("--json", action="store_true", help="one JSON object, for machines")


def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[int]], ledger: bool = False,
                 writes: bool = False, config_path: str | None = None) -> int:
    """writes: the command writes to Redis, so it is refused while Redis is behind the
    ledger store (app/ledger/guard.py): its entries would take ids the store holds."""
    async def run(url: str) -> int:
        async with Runtime(settings, url, ledger=ledger, config_path=config_path) as runtime:
            refusal = runtime.guard.refusal
            if writes and refusal:
                raise Refusal(f"refused, nothing written: {refusal}; to restore Redis from the ledger store "
                              f"run: {runtime.guard.command}")
            return await work(runtime)

    with redis_url(settings.redis.url, settings.data_path, settings.redis.port, settings.log.redis_relayed) as url:
        return uvloop.run(run(url))  # the flush process runs for good: the faster loop


def with_wallet(settings: Settings, work: Callable[[Wallet], Awaitable[int]], writes: bool,
                config_path: str | None) -> int:
    async def on_wallet(runtime: Runtime) -> int:
        return await work(runtime.wallet)

    return with_runtime(settings, on_wallet, writes=writes, config_path=config_path)


def player_create(args: argparse.Namespace, settings: Settings) -> Callable[[Runtime], Awaitable[int]]:
    async def work(runtime: Runtime) -> int:
        decimal_to_minor(args.balance, currency.exponent(args.currency), "--balance")  # names the flag
        fields = {"player_id": args.player_id, "currency": args.currency, "balance": args.balance,
                  "country": args.country, "language": args.language, "name": args.name,
                  "aliases": args.alias, "operator_id": args.operator}
        try:
            request = msgspec.convert(fields, PlayerRequest)
        except msgspec.ValidationError as exc:
            raise Refusal(f"player id {args.player_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . @ -") from exc
        try:
            created = await create_player(runtime.oia_wallet, settings.oia, request)
        except AdminError as exc:
            raise Refusal(str(exc)) from exc
        owner = f", operator {created['operator_id']}" if created["operator_id"] else ""
        print(f"created {args.player_id} ({args.currency} {args.balance}{owner}), ledger entry {created['entry_id']}")
        return 0

    return work


async def require_profile(wallet: Wallet, player_id: str) -> tuple[dict[str, str], int]:
    """The player's profile and currency exponent, or a refusal."""
    profile = await wallet.profile(player_id)
    if profile is None:
        raise Refusal(f"unknown player {player_id}")
    return profile, currency.exponent(profile["cur"])


def player_show(args: argparse.Namespace) -> Callable[[Wallet], Awaitable[int]]:
    async def work(wallet: Wallet) -> int:
        profile, exponent = await require_profile(wallet, args.player_id)
        shown = {"player_id": args.player_id, "balance": minor_to_decimal(int(profile["bal"]), exponent),
                 "balance_minor": int(profile["bal"]), "currency": profile["cur"],
                 "country": profile["country"], "language": profile["lang"], "name": profile["name"],
                 "aliases": profile["aliases"].split(), "operator": profile.get("op", "")}
        print(msgspec.json.format(msgspec.json.encode(shown)).decode())
        return 0

    return work


def player_adjust(args: argparse.Namespace) -> Callable[[Wallet], Awaitable[int]]:
    async def work(wallet: Wallet) -> int:
        _, exponent = await require_profile(wallet, args.player_id)
        amount = decimal_to_minor(args.amount, exponent, "amount")
        result = await wallet.adjust(args.player_id, args.action, amount, args.ref)
        balance = minor_to_decimal(result.balance_minor, exponent)
        if result.code == "OK":
            print(f"{args.action} {args.amount} booked as {result.entry_id}; balance {balance}")
        elif result.code == "REPEAT":
            print(f"ref {args.ref} was already booked as {result.entry_id}; nothing moved; balance then {balance}")
        else:
            raise Refusal(adjust_refusal(args.action, args.player_id, args.ref, result.code, args.amount, balance))
        return 0

    return work


def adjust_refusal(action: str, player_id: str, ref: str, code: str, amount: str, balance: str) -> str:
    """What a refusal of lua/admin_adjust.lua means, in words (amounts as decimals)."""
    reasons = {
        "REF_CONFLICT": f"ref {ref} was already used with another amount or direction",
        "FUNDS": f"balance {balance} is lower than {amount}",
        "OVERFLOW": f"the balance would exceed the largest one walletd holds (2^53 - 1 minor units); "
                    f"balance {balance}",
        "BACKLOG": "the ledger backlog of this player's partition is full (is the flusher running? "
                   "[wallet] backlog_max); try again later",
        "NO_PLAYER": f"unknown player {player_id}",
    }
    assert code in reasons, f"admin_adjust.lua returned {code}, which has no sentence"
    return f"{action} refused: {reasons[code]}; nothing moved"


def player_block(args: argparse.Namespace) -> Callable[[Wallet], Awaitable[int]]:
    async def work(wallet: Wallet) -> int:
        await wallet.set_blocked(args.player_id, args.action == "block")
        print(f"{args.player_id} {args.action}ed; effective from the next callback")
        return 0

    return work


def session_new(args: argparse.Namespace, settings: Settings) -> Callable[[Runtime], Awaitable[int]]:
    async def work(runtime: Runtime) -> int:
        fields = {"player_id": args.player_id, "game_id": args.game, "lobby_id": args.lobby,
                  "operator_id": args.operator, "home_url": args.home_url, "device": args.device, "fun": args.fun}
        try:
            session = await open_session(runtime.oia_wallet, settings.oia, msgspec.convert(fields, SessionRequest))
        except (AdminError, msgspec.ValidationError) as exc:
            raise Refusal(str(exc)) from exc
        print(msgspec.json.format(msgspec.json.encode(session)).decode())
        return 0

    return work


def flush(settings: Settings, config_path: str | None, reconcile_only: bool = False) -> int:
    # Draining may lag; a callback may not: the server process(es) and Redis win the CPU.
    os.nice(settings.flusher.nice)

    async def work(runtime: Runtime) -> int:
        flusher, reconciler = runtime.flusher, runtime.reconciler
        assert flusher is not None and reconciler is not None
        # Both idle while Redis is behind the ledger store, and start once it is not.
        runtime.start_guard(FLUSHER_ROLE)
        runtime.start_metrics()  # under serve: the flusher's counts, beside the workers' (app/metrics.py)
        guard = runtime.guard

        def stop() -> None:  # SIGINT/SIGTERM: both stop between rounds, no traceback
            flusher.request_exit()
            reconciler.should_exit = True
            guard.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop)
        # reconcile_only: another instance stores the ledger (README "Scaling out"), but
        # only this one can settle the notes in its own data_dir's journal.
        await asyncio.gather(*([] if reconcile_only else [flusher.run()]), reconciler.run())
        return 0

    return with_runtime(settings, work, ledger=True, config_path=config_path)


def run_verify(settings: Settings, config_path: str | None) -> int:
    async def work(runtime: Runtime) -> int:
        assert runtime.flusher is not None
        problems = await verify(runtime.flusher)
        for problem in problems:
            print(problem)
        print("verify: OK" if not problems else f"verify: {len(problems)} problem(s)")
        return EXIT_REFUSED if problems else 0

    return with_runtime(settings, work, ledger=True, config_path=config_path)


def copy_ledger(args: argparse.Namespace) -> int:
    """walletd ledger copy: exit 0 when the destination equals the source at the end, 1 when
    it does not or the copy was refused (the destination holds another ledger, ...)."""
    if not 1 <= args.batch <= ledger_copy.BATCH_MAX:
        raise Refusal(f"--batch must be 1..{ledger_copy.BATCH_MAX}")
    shown = f"{without_passwords(args.source)} -> {without_passwords(args.destination)}"
    try:
        ledger_copy.refuse_unusable(args.source, args.destination)
    except ledger_copy.CopyRefused as exc:
        raise Refusal(f"ledger copy {shown}: {exc}") from None
    with contextlib.closing(open_store(args.source)) as source, \
            contextlib.closing(open_store(args.destination)) as destination:
        print(f"ledger copy {shown}", flush=True)
        try:
            copied = ledger_copy.copy_ledger(source, destination, args.batch, lambda line: print(line, flush=True))
        except LedgerConflict as exc:
            raise Refusal(f"ledger copy: {exc}") from None
        rate = copied.total / copied.seconds if copied.seconds > 0 else 0.0
        print(f"ledger copy: {copied.total:,} entries copied into {len(copied.partitions)} partition(s) in "
              f"{copied.seconds:.1f} s ({rate:,.0f} entries/s)", flush=True)
        problems = ledger_copy.differences(source, destination)
    for problem in problems:
        print(problem)
    if problems:
        print(f"ledger copy: the destination does NOT equal the source ({len(problems)} difference(s)); "
              f"if walletd wrote to the source meanwhile, run the copy again after stopping it")
        return EXIT_REFUSED
    print("ledger copy: the destination equals the source (every entry, and seq_max per partition, every player's sum)")
    return 0


def run_rebuild(settings: Settings) -> int:
    async def work(url: str) -> int:
        runtime = Runtime(settings, url, ledger=True)  # not started: rebuild decides what Redis gets
        try:
            assert runtime.store is not None
            summary = await rebuild(runtime.redis, runtime.store, settings,
                                    lambda line: print(line, file=sys.stderr, flush=True))
        finally:
            await runtime.close()
        for problem in summary.problems:
            print(problem)
        if summary.problems:
            print(f"rebuild: {len(summary.problems)} problem(s); Redis is still marked as being rebuilt "
                  f"(walletd refuses callbacks): compare with `walletd verify`")
            return EXIT_REFUSED
        print(f"rebuild: done ({summary.partitions} partitions, {summary.entries} entries, "
              f"{summary.players} players)")
        return 0

    with redis_url(settings.redis.url, settings.data_path, settings.redis.port, settings.log.redis_relayed) as url:
        return uvloop.run(work(url))


def run_info(args: argparse.Namespace, settings: Settings) -> int:
    """walletd info: reads Redis only (no ledger store, no guard), so it also answers while
    walletd refuses to start (a partition count that differs, Redis behind the store)."""
    async def work(url: str) -> int:
        cluster = cluster_mode(url, settings.redis)
        redis = connect(url, settings.redis, cluster)
        try:
            found = await placement(redis, url, cluster, Keys(settings.wallet.partitions), version(),
                                    settings.redis.socket_timeout_ms / 1000)
        finally:
            await redis.aclose()
        print(msgspec.json.encode(found).decode() if args.json else render(found))
        return 0

    with redis_url(settings.redis.url, settings.data_path, settings.redis.port, settings.log.redis_relayed) as url:
        return uvloop.run(work(url))


def run_migrate(settings: Settings) -> int:
    """What serve and flush do at start, alone (no Redis): e.g. before starting a new version."""
    applied = migrate_store(settings.storage_url)
    shown = without_passwords(settings.storage_url)
    print(f"migrate: applied {', '.join(applied)} to {shown}" if applied else f"migrate: {shown} is up to date")
    return 0


def run_init(args: argparse.Namespace) -> int:
    path = starter_config.target(getattr(args, "config", None))
    try:
        created = starter_config.create(path, args.operator, args.force)
    except FileExistsError:
        raise Refusal(f"{path} exists; not overwritten (walletd init --force replaces it)") from None
    print(starter_config.announcement(created))
    return 0


def config_check(args: argparse.Namespace, settings: Settings) -> int:
    """Reached once config.load accepted the configuration (file, environment, secret
    sources, every check serve makes before it opens Redis or the ledger store)."""
    print(config_show.render(settings, args.format), end="" if args.format == "toml" else "\n")
    source = config.config_file(getattr(args, "config", None)) or "no file: the defaults"
    print(f"walletd: config check: valid ({source}); Redis and the ledger store were not contacted",
          file=sys.stderr)
    return 0


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    config_path = getattr(args, "config", None)
    if args.command == "serve":
        return serve.serve(settings, config_path)
    if args.command == "flush":
        return flush(settings, config_path, args.reconcile_only)
    if args.command == "verify":
        return run_verify(settings, config_path)
    if args.command == "rebuild":
        return run_rebuild(settings)
    if args.command == "migrate":
        return run_migrate(settings)
    if args.command == "info":
        return run_info(args, settings)
    if args.command == "config":
        return config_check(args, settings)
    if args.command == "session":
        return with_runtime(settings, session_new(args, settings), writes=True, config_path=config_path)
    if args.action == "create":
        return with_runtime(settings, player_create(args, settings), writes=True, config_path=config_path)
    builders = {"show": player_show, "deposit": player_adjust, "withdraw": player_adjust,
                "block": player_block, "unblock": player_block}
    return with_wallet(settings, builders[args.action](args), args.action != "show", config_path)


def plain(message: str) -> None:
    """Why a command ended, for the person at the terminal: one line."""
    print(f"walletd: {message}", file=sys.stderr)


def logged(message: str) -> None:
    """Why a command ended, as a line of the configured log format."""
    logging.getLogger("walletd").error("%s", message)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging()  # the defaults until the settings say otherwise
    report = plain
    try:
        if args.command == "ledger":  # two store URLs, no config, no Redis
            return copy_ledger(args)
        if args.command == "init":  # writes the config, reads none
            return run_init(args)
        if args.command == "healthcheck":  # exit 0 or 1 only, a bad config included (Docker reserves 2)
            return healthcheck.main(getattr(args, "config", None))
        settings = config.load(getattr(args, "config", None))
        configure_logging(settings.log)
        if settings.log.format == "json" or args.command == "flush":
            report = logged  # read by a log pipeline, or in serve's log (the flush process)
        return dispatch(args, settings)
    except RebuildRefused as exc:
        report(f"rebuild refused: {exc}")
        return EXIT_USAGE
    except (config.ConfigError, serve.StartupError) as exc:
        report(str(exc))
        return EXIT_USAGE
    except AlreadyRunning as exc:
        report(str(exc))
        return EXIT_RUNNING
    except (RedisError, RedisClusterException, WalletCallError) as exc:  # the second: a cluster slot unserved
        # Redis down or refusing us is no answer to the command: not exit 1 ("refused",
        # or for verify "mismatch"), and not a traceback.
        report(f"cannot use Redis: {without_passwords(str(exc) or type(exc).__name__)}")
        return EXIT_USAGE
    except StoreUnavailable as exc:
        # Like Redis: a store that cannot be opened or used is no answer to the command.
        report(f"cannot use the ledger store: {without_passwords(str(exc))}")
        return EXIT_USAGE
    except (Refusal, WalletError, AmountError, currency.CurrencyError) as exc:
        report(str(exc))
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
