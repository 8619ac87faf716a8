-- walletd ledger store, PostgreSQL, migration 0002: ready for agents' point wallets and
-- transfers between partitions (docs/transfers.md). It adds no rows: every entry stored
-- before reads as a player's entry with no counterparty. The new CHECKs read the whole
-- table once, under the migration's lock (a large ledger: run `walletd migrate` first).

-- Whose account an entry moves: '' a player's (every entry before this migration),
-- 'agent' an agent's point wallet (app/ledger ACCOUNT_KINDS).
ALTER TABLE ledger ADD COLUMN account_kind text NOT NULL DEFAULT ''
    CONSTRAINT ledger_account_kind_check CHECK (account_kind IN ('', 'agent'));
-- A transfer leg's other account, "<kind>:<id>" (app/ids.py account_ref); '' otherwise.
ALTER TABLE ledger ADD COLUMN counterparty text NOT NULL DEFAULT '';

ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('open', 'bet', 'win', 'refund', 'cancel', 'deposit', 'withdraw', 'reverse',
                    'transfer_out', 'transfer_in', 'transfer_reverse',
                    'refusal', 'tombstone', 'block', 'unblock', 'finish'));
-- journal entries record a decision and move nothing; transfer legs are money
ALTER TABLE ledger DROP CONSTRAINT ledger_journal_moves_nothing;
ALTER TABLE ledger ADD CONSTRAINT ledger_journal_moves_nothing
    CHECK (kind IN ('open', 'bet', 'win', 'refund', 'cancel', 'deposit', 'withdraw', 'reverse',
                    'transfer_out', 'transfer_in', 'transfer_reverse')
           OR amount_minor = 0);

-- A transfer leg is booked by a transfer script (source 'transfer', ref the transfer id),
-- names its other account, and its sign is its direction: the debit negative, the credit
-- and the reversal positive; none is zero.
ALTER TABLE ledger ADD CONSTRAINT ledger_transfer_leg
    CHECK (kind NOT IN ('transfer_out', 'transfer_in', 'transfer_reverse')
           OR (source = 'transfer' AND counterparty <> '' AND amount_minor <> 0
               AND (amount_minor < 0) = (kind = 'transfer_out')));

-- An agent's profile has no table yet (the agents' issue adds it with its own migration):
-- an 'open' entry of an agent's account would otherwise be lost or taken for a player's.
ALTER TABLE ledger ADD CONSTRAINT ledger_agent_not_opened CHECK (account_kind = '' OR kind <> 'open');

-- A transfer id (unique across accounts: its source is in it) is debited once ...
CREATE UNIQUE INDEX ledger_transfer_debited_once ON ledger (ref) WHERE kind = 'transfer_out';
-- ... and settled once: credited at its destination or given back at its source, never both.
-- Two Redis partitions decide the two sides; the store refuses the second settlement's
-- batch (the flusher stops on that partition and says why) instead of keeping money twice.
CREATE UNIQUE INDEX ledger_transfer_settled_once ON ledger (ref)
    WHERE kind IN ('transfer_in', 'transfer_reverse');
