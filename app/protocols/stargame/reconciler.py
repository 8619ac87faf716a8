"""Settles StarGame writeBets answered 'fail' whose outcome was unknown.

StarGame has no transaction id, no retry and no cancel: a 'fail' whose booking
landed would leave the player charged for a spin the platform refused. Every
such request was noted in the journal (app/protocols/stargame/journal.py) before the
answer; here each note is settled by one Lua script (lua/stargame_reconcile.lua,
atomic and idempotent): a landed bet is reversed by a 'reverse' ledger entry
naming the original entries, a landed win notification is kept (StarGame
ignores the answer to a win), and a request that did not land gets a tombstone
so it can never land later. It runs in the flusher's process, at its own pace.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from pathlib import Path
from typing import Any

from app.ids import is_player_id
from app.keys import Keys
from app.ledger.guard import ColdStart
from app.logsafe import quoted
from app.protocols.stargame.journal import SUFFIX, JournalFile, Note, journal_files
from app.scripts import Scripts
from app.settings import StarGameSettings

log = logging.getLogger("walletd.reconciler")

# Bounds per pass: a backlog is worked off over several passes.
FILES_PER_PASS = 100
NOTES_PER_FILE_PASS = 1000
# A note this close to the request record's expiry is not settled automatically:
# the record (what the booking moved, or its absence) may no longer tell the truth.
STALE_MARGIN_MS = 60_000
DONE_SUFFIX = ".done"
# After a failed pass (Redis down) the next waits up to this long; one log line per streak.
BACKOFF_MAX_S = 5.0
# A request id is 32 hex digits (app/protocols/stargame/wallet.py RequestIds).
REQUEST_ID_LEN = 32


def is_request_id(text: str) -> bool:
    return len(text) == REQUEST_ID_LEN and all(c in "0123456789abcdef" for c in text)


class Reconciler:
    def __init__(self, scripts: Scripts, keys: Keys, settings: StarGameSettings, directory: Path,
                 guard: ColdStart | None = None) -> None:
        self.scripts = scripts
        self.guard = guard  # it books nothing while this refuses (Redis behind the ledger store)
        self.keys = keys
        self.settings = settings
        self.directory = directory
        self.retention_ms = settings.request_retention_s * 1000
        # Outcomes since start: reversed, kept, tombstoned, done (settled before), stale, unreadable.
        self.counts: collections.Counter[str] = collections.Counter()
        self.should_exit = False

    async def run(self) -> None:
        delay_s = self.settings.reconcile_interval_ms / 1000
        failing = False
        while not self.should_exit:
            if self.guard is not None and self.guard.refusal:
                await asyncio.sleep(self.settings.reconcile_interval_ms / 1000)
                continue
            try:
                await self.reconcile_all()
            except Exception as exc:  # noqa: BLE001 - Redis or disk trouble: retried, never fatal
                if not failing:
                    log.error("reconciler pass failed, retrying with backoff: %s", quoted(exc))
                failing = True
                delay_s = min(delay_s * 2, BACKOFF_MAX_S)
            else:
                if failing:
                    log.info("reconciler passes succeed again")
                failing = False
                delay_s = self.settings.reconcile_interval_ms / 1000
            await asyncio.sleep(delay_s)

    async def reconcile_all(self) -> int:
        """One pass over every journal file; returns how many notes were settled now."""
        settled = 0
        failure: Exception | None = None
        for path in journal_files(self.directory, FILES_PER_PASS):
            try:
                settled += await self.reconcile_file(path)
            except Exception as exc:  # noqa: BLE001 - one file's trouble must not starve the others
                failure = failure or exc
        remove_orphan_offsets(self.directory)
        if failure is not None:
            raise failure  # the pass failed: logged once per streak, retried with backoff
        return settled

    async def reconcile_file(self, path: Path) -> int:
        try:
            journal = JournalFile(path)
        except FileNotFoundError:
            return 0  # settled and deleted by another reconciler (a `walletd flush` beside serve)
        try:
            offset = read_offset(path)
            settled = 0
            for end, note in journal.notes(offset, NOTES_PER_FILE_PASS):
                settled += await self.settle(note)
                offset = end
                write_offset(path, offset)  # a restarted reconciler resumes here
            if journal.owner_gone and offset < journal.size() and journal.only_torn_line_after(offset):
                # Its writer died mid-note (or cut a short write it could not undo): that
                # request was never answered as noted, and nobody will finish the line.
                log.warning("reconciler: journal file %s ends in an incomplete note; dropped with the file",
                            path.name)
                offset = journal.size()
            if journal.owner_gone and offset >= journal.size():
                path.unlink()  # while still locked: no writer can be using it
                done_path(path).unlink(missing_ok=True)
            return settled
        finally:
            journal.close()

    async def settle(self, note: Note | None) -> int:
        if note is None or not is_request_id(note.request_id) or not is_player_id(note.player_id):
            self.counts["unreadable"] += 1
            log.error("reconciler: unreadable journal note %s skipped", quoted(note))
            return 0
        age_ms = int(time.time() * 1000) - note.ts_ms
        if age_ms > self.retention_ms - STALE_MARGIN_MS:
            self.counts["stale"] += 1
            log.error("stargame request %s (player %s, bet %d, win %d cents) answered fail %d s ago with its "
                      "outcome unknown, too long ago to settle safely (stargame.request_retention_s): look for "
                      "ledger entries with ref %s and reverse a landed bet by hand; %d stale so far",
                      note.request_id, note.player_id, note.bet_cents, note.win_cents, age_ms // 1000,
                      note.request_id, self.counts["stale"])
            return 1
        partition = self.keys.partition(note.player_id)
        keys = [self.keys.stargame_request(partition, note.request_id), self.keys.account_at(partition, note.player_id),
                self.keys.seq(partition), self.keys.ledger(partition)]
        reply = await self.scripts.stargame_reconcile(
            keys=keys, args=[note.player_id, partition, self.retention_ms, note.request_id])
        self.report(note, reply)
        return 1

    def report(self, note: Note, reply: list[Any]) -> None:
        outcome = reply[0]
        self.counts[outcome.lower()] += 1
        total = self.counts[outcome.lower()]
        what = (f"stargame request {note.request_id} (player {note.player_id}, bet {note.bet_cents}, "
                f"win {note.win_cents} cents) answered fail with its outcome unknown")
        if outcome == "REVERSED":
            amount, entry, originals, balance = int(reply[1]), reply[2], reply[3], int(reply[4])
            log.warning("%s had booked %s: reversed by ledger entry %s (%+d minor), balance %d; %d reversed so far",
                        what, originals, entry, amount, balance, total)
            if balance < 0:
                log.error("player %s is below zero (%d minor) after reversing request %s: the reversed win "
                          "was spent meanwhile", note.player_id, balance, note.request_id)
        elif outcome == "KEPT":
            log.warning("%s: the win notification had booked %s and stands (StarGame ignores the answer to a "
                        "win); %d kept so far", what, reply[3], total)
        elif outcome == "TOMBSTONED":
            log.info("%s had not booked: tombstoned, so it never will; %d tombstoned so far", what, total)
            if note.bet_cents == 0 and note.win_cents > 0:
                log.error("player %s: a StarGame win of %d cents (request %s) was not booked, and StarGame "
                          "counts it as paid: credit it by hand (walletd player deposit --ref %s)",
                          note.player_id, note.win_cents, note.request_id, note.request_id)
        else:
            assert outcome == "DONE", reply
            # A re-read note: an earlier pass settled it (its reply may have been lost).
            log.info("%s: settled before (%s); %d such so far", what, quoted(reply[1]), total)


def done_path(path: Path) -> Path:
    return path.with_suffix(DONE_SUFFIX)


def read_offset(path: Path) -> int:
    try:
        return int(done_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    """Atomic replace; not fsynced: a lost offset only re-runs notes, which settle as DONE.
    The temporary name is this process's: a second reconciler (`walletd flush` started
    beside serve) writing the same offset file must not replace it from under us."""
    temporary = path.with_suffix(f".done.{os.getpid()}.tmp")
    temporary.write_text(str(offset))
    os.replace(temporary, done_path(path))


def remove_orphan_offsets(directory: Path) -> None:
    """Offset files whose journal file is gone: a second reconciler wrote one after the
    first deleted the settled file. Bounded like a pass."""
    if not directory.is_dir():
        return
    for done in sorted(directory.glob(f"*{DONE_SUFFIX}"))[:FILES_PER_PASS]:
        if not done.with_suffix(SUFFIX).exists():
            done.unlink(missing_ok=True)
