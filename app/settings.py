"""One TOML file plus three environment overrides; see README "Configuration"."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from redis.connection import parse_url

from app import currency, secret_sources
from app.keys import PARTITIONS_MAX
from app.redis_pipe import redacted, tls_context

# The config file's path when --config is not given (uvicorn's workers find it here too).
ENV_CONFIG = "WALLETD_CONFIG"
# Read from the working directory when neither --config nor WALLETD_CONFIG names one.
DEFAULT_CONFIG_FILE = "walletd.toml"


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # Server processes sharing the port (uvicorn's supervisor); each has its own
    # event loop and Redis connections, and its own flusher.
    workers: int = 1
    # TLS from uvicorn: both set, or neither (plain HTTP).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed;
    # from any other peer the header is ignored (the StarGame allow-list judges the peer).
    forwarded_allow_ips: list[str] = []
    # After SIGINT/SIGTERM in-flight callbacks get this long to be answered.
    shutdown_timeout_s: int = 10


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "embedded"
    # Port of the embedded redis-server; 0 picks a free one.
    port: int = 0
    # A booking must not hang past the platform's budget; a reply slower than
    # this is treated as "outcome unknown" and logged, never re-sent.
    socket_timeout_ms: int = 1000
    connect_timeout_ms: int = 500
    # Who runs the Lua scripts: "pipelined" (one connection, concurrent calls
    # batched; see app/redis_pipe.py) or "redis-py" (its connection pool).
    script_client: str = "pipelined"
    # `walletd serve` refuses a Redis without AOF, appendfsync always and
    # maxmemory-policy noeviction; false runs anyway, with a warning at every start.
    require_durable: bool = True
    # Redis Cluster: "auto" asks the node redis.url names at start (INFO cluster);
    # true or false says it (README "Scaling out").
    cluster: bool | Literal["auto"] = "auto"
    # After each booking script, WAIT for this many replicas to confirm its writes before
    # answering; unconfirmed within replica_ack_timeout_ms, the call ends "outcome
    # unknown" (OIA OP_47, StarGame fail + reconciliation). 0: answer once the primary
    # has it (its AOF), replicas follow asynchronously (README "Scaling out").
    replica_acks: int = 0
    # Comes out of each protocol's budget (at most half of it): StarGame's 40 ms leave
    # 20 ms to book, 20 ms for the replicas (a replica on the LAN confirms in ~1-3 ms).
    replica_ack_timeout_ms: int = 20

    def __repr__(self) -> str:  # like OperatorSettings': a password in the URL never reaches a log line
        return f"RedisSettings(url={redacted(self.url)!r}, port={self.port})"


class StorageSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Empty means sqlite:///<data_dir>/ledger.db.
    url: str = ""

    def __repr__(self) -> str:
        return f"StorageSettings(url={redacted(self.url)!r})"


OPERATOR_ID = re.compile(r"[A-Za-z0-9_-]{1,20}")  # the seed's operator_id: STRING 20


class OperatorSettings(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    # The secret, or a file holding it (secret_key_file), or the environment
    # (README "Configuration": one variable per operator); exactly one source.
    secret_key: str = ""
    secret_key_file: str = ""
    # ISO codes this operator may play in; empty means any.
    currencies: list[str] = []
    # BETs on these game ids are refused with OP_35 (WIN/REFUND still credit).
    disabled_games: list[int] = []

    def __repr__(self) -> str:  # secrets never reach a log line
        return f"OperatorSettings(id={self.id!r}, secret_key='***')"


class OiaSettings(msgspec.Struct, forbid_unknown_fields=True):
    path: str = "/oia"
    operators: list[OperatorSettings] = []
    # A callback that cannot be booked this long after it arrived answers
    # OP_47 without moving money (the platform then cancels or retries).
    budget_ms: int = 2000
    # Transaction and round records stay in Redis this long: longer than any
    # platform's retry window; status/cancel fall back to the ledger store after.
    retention_s: int = 72 * 3600
    # Late retries (README "Late retries"): every booked id is kept in a per-partition
    # Bloom filter for at least one generation (two are kept); a week reaches well past
    # the records' retention, so a late retry never depends on transaction_timestamp alone.
    filter_generation_s: int = 7 * 24 * 3600
    # Bits per partition per generation; 0 = FILTER_BITS_TOTAL / wallet.partitions (2^23,
    # 1 MiB, at 16 partitions; 2^19 at 256): the memory and the false-positive rate at a
    # given total booking rate stay the same whatever the partition count (2^23 keeps
    # false positives near 2 % up to ~750,000 bookings per partition per generation;
    # README has the arithmetic).
    filter_bits: int = 0
    # A session token not used (authenticate, balance, BET) this long expires.
    session_idle_s: int = 1800
    # Host (or https://host/path) of the platform's game launcher, for launch URLs.
    game_launch_host: str = ""
    home_url: str = ""
    # Secrets shorter than 16 characters or equal to an example value are refused at
    # start unless this is true (a test bed, never production).
    allow_weak_secrets: bool = False


class AdminSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Bearer token for POST /admin/sessions; empty turns the admin API off.
    token: str = ""
    # A file holding the token (or WALLETD_ADMIN_TOKEN_FILE), instead of token.
    token_file: str = ""
    # The admin API on a listener of its own, so it need not face the platform;
    # port 0 = on the main listener with the callbacks.
    host: str = "127.0.0.1"
    port: int = 0

    def __repr__(self) -> str:
        return "AdminSettings(token='***')"


class StarGameSettings(msgspec.Struct, forbid_unknown_fields=True):
    path: str = "/stargame"
    # Addresses or networks (CIDR) allowed to call; everyone else gets 403.
    allowed_ips: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    # StarGame waits 50 ms for the whole round trip; a booking that would
    # start later than this after the request arrived is refused unbooked.
    budget_ms: int = 40
    # Each writeBet's internal request id stays in Redis this long with what it
    # booked (or as a tombstone), so the reconciler can settle a booking whose
    # outcome was unknown. Memory: about 200 bytes per writeBet in this window.
    request_retention_s: int = 3600
    # Outcome-unknown notes per journal file (one file per process at a time), and
    # journal files allowed under data_dir before writeBets are refused unbooked
    # (the reconciler is off or not keeping up): bounds the disk a Redis outage fills.
    journal_notes_per_file: int = 1000
    journal_files_max: int = 100
    # The reconciler (in the flusher's process) looks for new notes this often.
    reconcile_interval_ms: int = 200


# oia.filter_bits and wallet.backlog_max when not set: these totals over the partitions,
# so one deployment's filter memory (2 generations x 2^27 bits = 32 MiB) and full-backlog
# memory (16,000,000 entries x ~180 B = 2.9 GB) do not grow with the partition count.
FILTER_BITS_TOTAL = 2**27
BACKLOG_TOTAL = 16_000_000


class WalletSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Fixed for the life of a deployment: a player's keys live in partition
    # crc32(player_id) % partitions (checked against Redis at start). 256 hash tags
    # spread over Redis Cluster's 16,384 slots: with the slots split evenly, each of 3
    # primaries holds 83-89 partitions (ideal 85.3), of 6 39-45, of 12 19-24, of 32 6-11
    # (python3 -m bench.partition_cost --spread); 16 gave 3 primaries 4-7 and left some
    # of 12 with none. What each partition costs every process (the guard's seq reads,
    # the flusher's idle reads) is measured by bench/partition_cost.py (README "Scaling out").
    # Deployments made before this default was 16 set `partitions = 16` (walletd says so).
    partitions: int = 256
    # Bookings are refused once a partition's ledger stream holds this many entries
    # not yet moved to the ledger store (flusher down): bounds Redis memory. 0 =
    # BACKLOG_TOTAL / partitions (1,000,000 at 16 partitions, 62,500 at 256).
    backlog_max: int = 0


class FlusherSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    # Entries per store transaction (one commit, an fsync, however many reads): fewer
    # commits per entry drain faster (make bench's drain: README "Benchmarks").
    batch_max: int = 4_000
    # Entries per XREADGROUP: Redis serves no booking while it builds a reply (~4 us an
    # entry), so ~2 ms; a batch takes batch_max / read_max reads, bookings served between.
    read_max: int = 500
    tick_ms: int = 100
    # Stable name, so a restarted flusher re-reads its own pending entries; one per
    # instance sharing a Redis ("" derives it from the host name and data_dir, and a
    # lease refuses a name another instance holds: app/ledger/consumers.py).
    consumer: str = ""
    # Pending entries of other consumers idle this long are claimed: a dead instance's
    # reach the store about this plus claim_interval_ms after it died. Far longer than a
    # live flusher holds a batch (a commit; retry_backoff_max_ms between re-reads of its
    # own while the store fails), so a live one is not robbed (that would only store the
    # batch twice, skipped as an identical repeat).
    claim_idle_ms: int = 60_000
    # Dead consumers' pending entries are looked for this often, not only at start.
    claim_interval_ms: int = 10_000
    # After a failed tick (store locked or down, Redis down) the next try waits
    # twice as long as the last, from tick_ms up to this.
    retry_backoff_max_ms: int = 5_000
    # The flush process runs at this niceness (0-19): on a host shared with the
    # server process(es) and Redis, the callbacks' latency wins the CPU over draining.
    nice: int = 10


class LogSettings(msgspec.Struct, forbid_unknown_fields=True):
    # "text" (one line, UTC timestamps) or "json" (one object per line).
    format: str = "text"
    level: str = "info"
    # One line per HTTP request (uvicorn's access log), in the same format.
    access_log: bool = False
    # The embedded redis-server's own log: "file" (data_dir/redis/redis.log) or "walletd"
    # (each of its lines a record of walletd's log, in its format: one stream, a container's).
    redis: str = "file"

    @property
    def redis_relayed(self) -> bool:
        return self.redis == "walletd"


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True):
    # GET /metrics in Prometheus text format.
    enabled: bool = True


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    data_dir: str = "./var"
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    oia: OiaSettings = msgspec.field(default_factory=OiaSettings)
    stargame: StarGameSettings = msgspec.field(default_factory=StarGameSettings)
    wallet: WalletSettings = msgspec.field(default_factory=WalletSettings)
    flusher: FlusherSettings = msgspec.field(default_factory=FlusherSettings)
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)

    def __post_init__(self) -> None:
        # Sizes given per deployment, split over the partitions when not set (0): a
        # partition count raised for a cluster does not multiply Redis's memory.
        partitions = max(1, self.wallet.partitions)  # checked by check(), after this
        if self.oia.filter_bits == 0:
            self.oia.filter_bits = max(1, FILTER_BITS_TOTAL // partitions)
        if self.wallet.backlog_max == 0:
            self.wallet.backlog_max = max(1, BACKLOG_TOTAL // partitions)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.data_path / 'ledger.db'}"


class ConfigError(Exception):
    pass


def config_file(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    if Path(DEFAULT_CONFIG_FILE).exists():
        return Path(DEFAULT_CONFIG_FILE)
    return None


def load(explicit: str | None = None) -> Settings:
    path = config_file(explicit)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from exc
    apply_env(settings)
    resolve_secrets(settings)
    check(settings)
    return settings


def resolve_secrets(settings: Settings) -> None:
    """Each secret's final value from its one source, refused if weak (README "Secrets")."""
    try:
        secret_sources.resolve(settings, os.environ)
    except secret_sources.SecretError as exc:
        raise ConfigError(str(exc)) from None
    weak = secret_sources.weak_secret(settings)
    if weak:
        raise ConfigError(weak)


def apply_env(settings: Settings) -> None:
    if os.environ.get("WALLETD_REDIS_URL"):
        settings.redis.url = os.environ["WALLETD_REDIS_URL"]
    cluster = os.environ.get("WALLETD_REDIS_CLUSTER")  # set by serve for its children (app/redis_topology.py)
    if cluster:
        if cluster not in ("true", "false"):
            raise ConfigError("WALLETD_REDIS_CLUSTER must be true or false")
        settings.redis.cluster = cluster == "true"
    if os.environ.get("WALLETD_STORAGE_URL"):
        settings.storage.url = os.environ["WALLETD_STORAGE_URL"]
    if os.environ.get("WALLETD_PORT"):
        try:
            settings.server.port = int(os.environ["WALLETD_PORT"])
        except ValueError as exc:
            raise ConfigError("WALLETD_PORT must be an integer") from exc


# redis.script_client's choices (app/redis_client.py script_client).
SCRIPT_CLIENTS = ("pipelined", "redis-py")
# The horizon is the generation less 5 minutes of clock skew: an hour keeps it meaningful.
FILTER_GENERATION_MIN_S = 3600
WORKERS_MAX = 64
# One flusher batch is one store transaction held in memory: bounded so neither grows unchecked.
FLUSHER_BATCH_MAX = 10_000
NICE_MAX = 19
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
REDIS_LOGS = ("file", "walletd")


def check(settings: Settings) -> None:
    if not 1 <= settings.server.workers <= WORKERS_MAX:
        raise ConfigError(f"server.workers must be 1..{WORKERS_MAX}")
    if settings.redis.script_client not in SCRIPT_CLIENTS:
        raise ConfigError(f"redis.script_client must be one of {', '.join(SCRIPT_CLIENTS)}")
    if not 1 <= settings.wallet.partitions <= PARTITIONS_MAX:
        raise ConfigError(f"wallet.partitions must be 1..{PARTITIONS_MAX}")
    if not 1 <= settings.flusher.batch_max <= FLUSHER_BATCH_MAX:
        raise ConfigError(f"flusher.batch_max must be 1..{FLUSHER_BATCH_MAX}")
    if not 1 <= settings.flusher.read_max <= FLUSHER_BATCH_MAX:
        raise ConfigError(f"flusher.read_max must be 1..{FLUSHER_BATCH_MAX}")
    flusher = settings.flusher
    if min(flusher.tick_ms, flusher.retry_backoff_max_ms) < 1 or flusher.claim_interval_ms < 0:
        raise ConfigError("flusher.tick_ms and flusher.retry_backoff_max_ms must be positive, "
                          "flusher.claim_interval_ms not negative")
    if not 0 <= flusher.nice <= NICE_MAX:
        raise ConfigError(f"flusher.nice must be 0..{NICE_MAX}")
    check_log(settings.log)
    if settings.server.shutdown_timeout_s < 1:
        raise ConfigError("server.shutdown_timeout_s must be positive")
    check_redis(settings.redis)
    check_networks("stargame.allowed_ips", settings.stargame.allowed_ips)
    check_network(settings.server, settings.admin)
    check_paths(settings.oia.path, settings.stargame.path)
    check_oia(settings.oia)
    check_stargame(settings.stargame)
    check_replica_wait(settings)
    if settings.stargame.journal_files_max < settings.server.workers:
        # Each server process keeps one journal file open for its next note; one without
        # a file refuses every writeBet.
        raise ConfigError("stargame.journal_files_max must be at least server.workers")


def check_networks(key: str, entries: list[str]) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc


# Hosts that listen on every address, so any port they take is taken on all hosts.
WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # noqa: S104 - names the wildcard, binds nothing
PORT_MAX = 65535


def check_network(server: ServerSettings, admin: AdminSettings) -> None:
    """TLS files, trusted proxies and the admin listener (README "TLS", "Behind a proxy", "Admin listener")."""
    if bool(server.ssl_certfile) != bool(server.ssl_keyfile):
        raise ConfigError("server.ssl_certfile and server.ssl_keyfile: set both (TLS) or neither (plain HTTP)")
    if server.ssl_certfile:
        check_tls(server.ssl_certfile, server.ssl_keyfile)
    check_networks("server.forwarded_allow_ips", server.forwarded_allow_ips)
    if not 0 <= admin.port <= PORT_MAX:
        raise ConfigError(f"admin.port must be 0..{PORT_MAX} (0: the admin API on the main listener)")
    same_host = admin.host == server.host or admin.host in WILDCARD_HOSTS or server.host in WILDCARD_HOSTS
    if admin.port and admin.port == server.port and same_host:
        raise ConfigError(f"admin.port {admin.port} is server.port on the same host: choose another port "
                          "(or 0 for the admin API on the main listener)")


def check_tls(certfile: str, keyfile: str) -> None:
    for key, path in (("server.ssl_certfile", certfile), ("server.ssl_keyfile", keyfile)):
        try:
            Path(path).open("rb").close()
        except OSError as exc:
            raise ConfigError(f"{key} {path!r}: cannot read it: {exc.strerror}") from exc
    try:
        # password "": an encrypted key fails here instead of prompting on the terminal.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile, password="")
    except ssl.SSLError as exc:
        raise ConfigError(f"server.ssl_certfile {certfile!r} and server.ssl_keyfile {keyfile!r}: not a PEM "
                          f"certificate and its unencrypted private key: {exc}") from exc


def check_log(log: LogSettings) -> None:
    for name, value, choices in (("format", log.format, LOG_FORMATS), ("level", log.level, LOG_LEVELS),
                                 ("redis", log.redis, REDIS_LOGS)):
        if value not in choices:
            raise ConfigError(f"log.{name} {value!r} must be one of {', '.join(choices)}")


# The paths app/web.py's Starlette app serves, besides <oia.path>/ping: the raw callback
# front (app/callbacks.py) answers a protocol's path before Starlette sees the request,
# so a protocol path equal to or under one of these would take it (or, for /admin, a
# route to come).
STARLETTE_PATHS = ("/healthz", "/admin", "/metrics")


def under(path: str, base: str) -> bool:
    """Whether path is base or below it (base "/oia": "/oia", "/oia/x", not "/oiax")."""
    return path == base or path.startswith(base + "/")


def check_paths(oia_path: str, stargame_path: str) -> None:
    """No protocol path may shadow another route: OIA takes POST <oia.path>/<command>
    and Starlette GET <oia.path>/ping, StarGame its one path with every method."""
    for name, path in (("oia.path", oia_path), ("stargame.path", stargame_path)):
        if not path.startswith("/"):
            raise ConfigError(f"{name} {path!r} must start with '/'")
        for reserved in STARLETTE_PATHS:
            if under(path, reserved):
                raise ConfigError(f"{name} {path!r} would take walletd's own {reserved} route(s); "
                                  f"choose a path outside {reserved}")
    if under(stargame_path, oia_path):
        raise ConfigError(f"stargame.path {stargame_path!r} is equal to or under oia.path {oia_path!r}: "
                          "it would take OIA's calls; the two protocols' paths must not overlap")


# Five minutes: the reconciler's 60 s safety margin leaves it four to settle a note.
STARGAME_RETENTION_MIN_S = 300


def check_stargame(stargame: StarGameSettings) -> None:
    # A tombstone must outlive any booking still in flight (bounded by budget_ms), and
    # the reconciler leaves notes within 60 s of the retention to an operator.
    if stargame.request_retention_s < STARGAME_RETENTION_MIN_S:
        raise ConfigError(f"stargame.request_retention_s must be at least {STARGAME_RETENTION_MIN_S}")
    if min(stargame.journal_notes_per_file, stargame.journal_files_max, stargame.reconcile_interval_ms) < 1:
        raise ConfigError("stargame.journal_notes_per_file, journal_files_max and reconcile_interval_ms "
                          "must be positive")


# The refusal text for a redis.url walletd cannot use.
REDIS_URL_FORMS = ("'embedded', redis://[[user]:password@]host[:port][/db], rediss://... (TLS, "
                   "?ssl_ca_certs=FILE) or unix:///path[?db=N&password=...]")


def check_redis(redis: RedisSettings) -> None:
    """The URL is parsed as both Redis clients will parse it, so a mistake stops the
    start with its reason instead of failing every booking later."""
    if min(redis.socket_timeout_ms, redis.connect_timeout_ms) < 1:
        raise ConfigError("redis.socket_timeout_ms and redis.connect_timeout_ms must be positive")
    check_replication(redis)
    if redis.url == "embedded":
        if redis.cluster is True:
            raise ConfigError("redis.cluster = true needs redis.url naming a node of the cluster, not 'embedded'")
        return
    shown = redacted(redis.url)
    if not redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis.url {shown!r} must be {REDIS_URL_FORMS}")
    try:
        options = parse_url(redis.url)
        tls_context(redis.url, options)
    except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"redis.url {shown!r}: {exc}") from exc
    db = urlsplit(redis.url).path.strip("/")
    if redis.url.startswith("redis") and db and not db.isdigit():
        raise ConfigError(f"redis.url {shown!r}: the db after '/' must be a number, not {db!r}")
    if options.get("username") and not options.get("password"):
        raise ConfigError(f"redis.url {shown!r} names user {options['username']!r} without a password")


# Replicas a WAIT may ask for: more than any sane deployment runs, small enough to be read as a mistake.
REPLICA_ACKS_MAX = 16


def replica_wait_ms(redis: RedisSettings) -> int:
    """What a booking's answer may wait for replicas after its script (app/redis_pipe.py):
    the protocols stop booking this long before their budget ends, so a confirmed answer
    still comes within the budget."""
    return redis.replica_ack_timeout_ms if redis.replica_acks else 0


def check_replication(redis: RedisSettings) -> None:
    """cluster and replica_acks: only the pipelined client routes by slot and runs WAIT
    on the connection that ran the script (README "Scaling out")."""
    if not 0 <= redis.replica_acks <= REPLICA_ACKS_MAX:
        raise ConfigError(f"redis.replica_acks must be 0..{REPLICA_ACKS_MAX}")
    if redis.replica_ack_timeout_ms < 1:
        raise ConfigError("redis.replica_ack_timeout_ms must be positive")
    if redis.script_client == "redis-py" and (redis.replica_acks or redis.cluster is True):
        raise ConfigError("redis.cluster and redis.replica_acks need redis.script_client = \"pipelined\"")
    if redis.cluster is not False and redis.url.startswith(("redis://", "rediss://")):
        db = urlsplit(redis.url).path.strip("/")
        if redis.cluster is True and db not in ("", "0"):
            raise ConfigError(f"redis.url {redacted(redis.url)!r}: a Redis Cluster has only db 0")
    if redis.cluster is True and redis.url.startswith("unix://"):
        raise ConfigError("redis.cluster = true needs a redis:// or rediss:// URL (cluster nodes are named by address)")


def check_replica_wait(settings: Settings) -> None:
    """The replicas' WAIT comes out of each protocol's budget (replica_wait_ms); at most
    half of it, so that a booking keeps the other half to wait for its turn in Redis."""
    wait_ms = replica_wait_ms(settings.redis)
    for name, budget_ms in (("stargame", settings.stargame.budget_ms), ("oia", settings.oia.budget_ms)):
        if 2 * wait_ms > budget_ms:
            raise ConfigError(f"redis.replica_ack_timeout_ms ({wait_ms}) must be at most half of {name}.budget_ms "
                              f"({budget_ms}): the answer waits for the replicas within that budget")


def check_oia(oia: OiaSettings) -> None:
    if min(oia.budget_ms, oia.retention_s, oia.session_idle_s) < 1:
        raise ConfigError("oia.budget_ms, oia.retention_s and oia.session_idle_s must be positive")
    if oia.filter_generation_s < FILTER_GENERATION_MIN_S:
        raise ConfigError(f"oia.filter_generation_s must be at least {FILTER_GENERATION_MIN_S}")
    if not 1 <= oia.filter_bits <= 2**32:
        raise ConfigError("oia.filter_bits must be 1..4294967296 (a Redis bitmap's size)")
    seen: set[str] = set()
    for operator in oia.operators:
        if not OPERATOR_ID.fullmatch(operator.id):
            raise ConfigError(f"oia.operators: id {operator.id!r} must be 1-20 of [A-Za-z0-9_-]")
        if operator.id in seen:
            raise ConfigError(f"oia.operators: id {operator.id!r} appears twice")
        for code in operator.currencies:
            try:
                currency.lookup(code)
            except currency.CurrencyError as exc:
                raise ConfigError(f"oia.operators {operator.id}: currencies: {exc}") from None
        seen.add(operator.id)
