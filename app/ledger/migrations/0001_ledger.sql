-- walletd ledger store, PostgreSQL: the system of record of every entry walletd decided
-- (app/ledger/__init__.py LedgerEntry). Applied once, in a transaction, under
-- pg_advisory_lock (app/ledger/migrations.py); recorded in schema_migrations.
-- A row the constraints refuse makes its whole batch fail: the flusher never acknowledges it.

CREATE TABLE ledger (
    partition integer NOT NULL CHECK (partition >= 0),
    seq bigint NOT NULL CHECK (seq >= 1),
    -- "<partition>:<seq>": derived, so unique by the primary key
    entry_id text NOT NULL CHECK (entry_id = partition::text || ':' || seq::text),
    player_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('open', 'bet', 'win', 'refund', 'cancel', 'deposit', 'withdraw',
                                       'reverse', 'refusal', 'tombstone', 'block', 'unblock', 'finish')),
    -- amounts walletd holds: |x| < 2^53 minor units (app/money.py AMOUNT_MINOR_LIMIT)
    amount_minor bigint NOT NULL CHECK (amount_minor > -9007199254740992 AND amount_minor < 9007199254740992),
    balance_after_minor bigint NOT NULL
        CHECK (balance_after_minor > -9007199254740992 AND balance_after_minor < 9007199254740992),
    source text NOT NULL CHECK (source <> ''),
    ref text NOT NULL,
    ts_ms bigint NOT NULL CHECK (ts_ms >= 0),
    fp text NOT NULL,
    operator text NOT NULL,
    currency text NOT NULL,
    round_id text NOT NULL,
    game_id text NOT NULL,
    round_finished text NOT NULL,
    code text NOT NULL,
    PRIMARY KEY (partition, seq),
    -- journal entries record a decision and move nothing
    CONSTRAINT ledger_journal_moves_nothing
        CHECK (kind IN ('open', 'bet', 'win', 'refund', 'cancel', 'deposit', 'withdraw', 'reverse')
               OR amount_minor = 0)
);

-- find(player, source, ref): the late-retry, status and cancel fallbacks
CREATE INDEX ledger_player_ref ON ledger (player_id, ref, source);
-- holds_entries(source)
CREATE INDEX ledger_source ON ledger (source);

-- An OIA transaction id is booked at most once per kind for a player. The player is in
-- the key because Redis decides per player (its records are w:{pN}:tx:oia:<operator>:<player>|<id>,
-- README "Deviations and choices"): a rule without it would refuse, forever, an entry Redis
-- had already answered OK for, and stop the flusher on that partition.
CREATE UNIQUE INDEX ledger_oia_booking ON ledger (operator, player_id, ref, kind)
    WHERE source = 'oia' AND kind IN ('bet', 'win', 'refund');

-- The profile an 'open' entry carried; a player is stored once.
CREATE TABLE players (
    player_id text PRIMARY KEY,
    currency text NOT NULL,
    country text NOT NULL,
    language text NOT NULL,
    name text NOT NULL,
    aliases text NOT NULL,
    created_ms bigint NOT NULL,
    operator text NOT NULL
);
