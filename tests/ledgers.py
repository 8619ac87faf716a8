"""Ledgers for tests that move whole ledgers (ledger copy): entries of every kind with
every field filled, built the way lua/lib/ledger.lua numbers them (per partition,
seq 1, 2, ...), and a reader of a store's whole content through its interface."""

from __future__ import annotations

from app.ledger import PROFILE_FIELDS, LedgerEntry, LedgerStore

TS_MS = 1_763_000_000_000  # 2025-11: any fixed time; entries step 1 ms apart
READ_BATCH = 1_000  # entries per read() when reading a whole partition back


def entry_of(partition: int, seq: int) -> LedgerEntry:
    """The seq-th entry of a partition: an 'open' first, then a mix of every kind
    (money and journal), each with the optional fields its kind carries."""
    player = f"p{partition}.{seq % 5}" if seq > 5 else f"p{partition}.{seq - 1}"
    common = {"entry_id": f"{partition}:{seq}", "partition": partition, "seq": seq, "player_id": player,
              "ts_ms": TS_MS + seq}
    if seq <= 5:  # the partition's five players open first
        profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR", "country": "DE", "lang": "en",
                                                        "name": f"Player {player}", "op": "testcasino",
                                                        "aliases": f"stargame:{partition}{seq}"}
        return LedgerEntry(**common, kind="open", amount_minor=10_000, balance_after_minor=10_000, source="admin",
                           ref="", profile=profile, operator="testcasino", currency="EUR")
    oia = {"source": "oia", "ref": f"testcasino|{partition}.{seq}", "operator": "testcasino", "currency": "EUR",
           "round_id": f"r{seq // 3}", "game_id": "200", "fp": f"fp{seq}"}
    match seq % 6:
        case 0:
            return LedgerEntry(**common, kind="bet", amount_minor=-seq, balance_after_minor=9_000 - seq,
                               round_finished="0", **oia)
        case 1:
            return LedgerEntry(**common, kind="win", amount_minor=2 * seq, balance_after_minor=9_000 + seq,
                               round_finished="1", **oia)
        case 2:
            return LedgerEntry(**common, kind="refusal", amount_minor=0, balance_after_minor=9_000, code="OP_31",
                               **oia)
        case 3:
            return LedgerEntry(**common, kind="reverse", amount_minor=seq, balance_after_minor=9_100,
                               source="stargame", ref=f"{partition}:{seq - 1}", currency="EUR")
        case 4:
            return LedgerEntry(**common, kind="deposit", amount_minor=seq * 100, balance_after_minor=9_500,
                               source="admin", ref=f"dep-{seq}", currency="EUR")
        case _:
            return LedgerEntry(**common, kind="block", amount_minor=0, balance_after_minor=9_500, source="admin",
                               ref="", currency="EUR")


def sample_ledger(partitions: dict[int, int], first_seq: int = 1) -> list[LedgerEntry]:
    """partition -> last seq: every partition's entries first_seq..last, in seq order."""
    return [entry_of(partition, seq) for partition, last in sorted(partitions.items())
            for seq in range(first_seq, last + 1)]


def fill(store: LedgerStore, entries: list[LedgerEntry], batch: int = 500) -> None:
    for start in range(0, len(entries), batch):
        store.insert(entries[start:start + batch])


def whole(store: LedgerStore) -> dict[int, list[LedgerEntry]]:
    """Every partition's entries, read back through read() (so profiles included)."""
    content: dict[int, list[LedgerEntry]] = {}
    for partition, stats in store.partition_stats().items():
        entries: list[LedgerEntry] = []
        for _ in range(stats.count // READ_BATCH + 2):
            got = store.read(partition, entries[-1].seq if entries else 0, READ_BATCH)
            if not got:
                break
            entries += got
        content[partition] = entries
    return content
