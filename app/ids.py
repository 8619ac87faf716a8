"""Identifier alphabets shared by every protocol, the CLI and the key builder.

Player ids end up inside Redis key names (app/keys.py): they must never hold
the characters that structure a key ('{', '}', ':', '|') or whitespace.
E-mail addresses and UUIDs fit. Agent ids (the agents' point wallets, docs/transfers.md)
and transfer references follow the same syntax, for the same reason.

A transfer id is "<kind>:<account id>|<ref>" of the account it draws on: unique across
all accounts because the source is in it (each caller's ref need only be unique per
source account), and it names the partition of the source, where its record lives, so a
recovery pass holding only a credit record or a tombstone finds the transfer's home.
"""

from __future__ import annotations

import re

# Room for e-mail addresses and UUIDs; within OIA's user_id (STRING 70, asserted in its messages).
PLAYER_ID_MAX_LEN = 64
# Never '{', '}', ':', '|' or spaces: player ids become part of key names (app/keys.py).
PLAYER_ID = re.compile(rf"[A-Za-z0-9_.@-]{{1,{PLAYER_ID_MAX_LEN}}}")


def is_player_id(text: str) -> bool:
    return PLAYER_ID.fullmatch(text) is not None


# An agent's id: the player id syntax (its account key is built the same way, app/keys.py).
AGENT_ID = PLAYER_ID
# The accounts a transfer moves points between, as named in a transfer id or a ledger
# entry's counterparty ("agent:a17", "player:611"; docs/transfers.md).
ACCOUNT_KINDS = ("player", "agent")
# A transfer's reference, given by its caller and unique per source account (its
# idempotency key): the player id alphabet, so it never holds '|' or ':'.
TRANSFER_REF = PLAYER_ID
# "<kind>:<account id>|<ref>": no part may hold ':' or '|', so it splits one way only.
TRANSFER_ID = re.compile(rf"({'|'.join(ACCOUNT_KINDS)}):({PLAYER_ID.pattern})\|({TRANSFER_REF.pattern})")


def account_ref(kind: str, account_id: str) -> str:
    """An account as a transfer names it: "<kind>:<id>" (a ledger entry's counterparty)."""
    if kind not in ACCOUNT_KINDS or not is_player_id(account_id):
        raise ValueError(f"not an account: kind {kind!r:.20}, id {account_id!r:.80}")
    return f"{kind}:{account_id}"


def transfer_id(kind: str, account_id: str, ref: str) -> str:
    """The id of the transfer the account (kind, account_id) makes under the caller's ref."""
    if TRANSFER_REF.fullmatch(ref) is None:
        raise ValueError(f"transfer ref {ref!r:.80} must be 1-64 of A-Z a-z 0-9 _ . @ -")
    return f"{account_ref(kind, account_id)}|{ref}"


def transfer_source(transfer: str) -> tuple[str, str] | None:
    """The (kind, id) of the account a transfer id draws on; None when it is not one."""
    match = TRANSFER_ID.fullmatch(transfer)
    return None if match is None else (match[1], match[2])
