"""The PostgreSQL store's schema, as numbered SQL files (NNNN_name.sql in this package),
each applied once, in its own transaction, and recorded in schema_migrations.

Whoever opens the store (walletd serve, flush, verify, `walletd migrate`) applies what is
missing under a session advisory lock, so concurrent openers migrate once: the second
waits, then finds nothing left to apply."""

from __future__ import annotations

import re
from importlib import resources

import psycopg

# pg_advisory_lock key for migrating (any fixed bigint; walletd's "WALLETD" in ASCII hex).
LOCK_KEY = 0x57414C4C455444
# A migration file's name: its version (4 digits, applied in order) and what it does.
FILE_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
# Which files were applied; created under the lock by the first opener.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The database holds a schema this walletd does not know (a newer walletd migrated it)."""


def migration_files() -> list[tuple[str, str, str]]:
    """(version, file name, SQL) of every migration shipped, in version order."""
    found = []
    for item in resources.files(__package__).iterdir():
        match = FILE_NAME.fullmatch(item.name)
        if match:
            found.append((match.group(1), item.name, item.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    assert len(set(versions)) == len(versions), f"two migrations share a version: {versions}"
    return found


def applied_versions(db: psycopg.Connection) -> set[str]:
    return {str(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}


def apply_migrations(db: psycopg.Connection) -> list[str]:
    """Applies the migrations the database lacks (db in autocommit mode); returns the
    file names applied, [] when it was up to date."""
    assert db.autocommit, "each migration runs in a transaction of its own"
    db.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        db.execute(CREATE_TABLE)
        applied = applied_versions(db)
        files = migration_files()
        unknown = applied - {version for version, _, _ in files}
        if unknown:
            raise MigrationError(f"the ledger database has schema version(s) {sorted(unknown)} that this walletd "
                                 f"does not know (a newer walletd migrated it): use that version")
        done = []
        for version, name, sql in files:
            if version in applied:
                continue
            with db.transaction():
                db.execute(sql.encode())  # several statements: no parameters, the simple protocol
                db.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            done.append(name)
        return done
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
