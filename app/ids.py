"""Identifier alphabets shared by every protocol, the CLI and the key builder.

Player ids end up inside Redis key names (app/keys.py): they must never hold
the characters that structure a key ('{', '}', ':', '|') or whitespace.
E-mail addresses and UUIDs fit.
"""

from __future__ import annotations

import re

# Room for e-mail addresses and UUIDs; within OIA's user_id (STRING 70, asserted in its messages).
PLAYER_ID_MAX_LEN = 64
# Never '{', '}', ':', '|' or spaces: player ids become part of key names (app/keys.py).
PLAYER_ID = re.compile(rf"[A-Za-z0-9_.@-]{{1,{PLAYER_ID_MAX_LEN}}}")


def is_player_id(text: str) -> bool:
    return PLAYER_ID.fullmatch(text) is not None
