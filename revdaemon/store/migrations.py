"""The store's schema: one numbered list of versions for both databases, each a script per database.

Append a version for every change; never edit one that has shipped (a store made by it is already at that
version). The store applies the missing versions at start and refuses a database whose version is newer than
this list. The runners differ (SQLite numbers its file by `PRAGMA user_version` and applies each version in its
own transaction; PostgreSQL keeps the number in `revdaemon_schema` and applies all that are missing in one
transaction under an advisory lock, so replicas starting together apply each once); the list is this one.

A version whose script for a database is None changes nothing there. PostgreSQL's schema begins at 5 (its first
release held what SQLite had reached in five), and PostgreSQL stores released before this list was shared are
numbered 1 to 6 in their own count: `from_postgres_number` reads those as 5 to 10.

Types differ where the databases do: SQLite keeps timestamps as fixed-width UTC text (encoding.ts_text), which
sorts in time order; PostgreSQL as timestamptz. JSON is the same compact, key-sorted text on both, and text that
is compared or sorted (keys, entity versions) uses the "C" collation on PostgreSQL: byte order, as SQLite does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    sqlite: str | None
    postgres: str | None


MIGRATIONS: tuple[Migration, ...] = (
    # 1: the first schema. (PostgreSQL: in 5.)
    Migration(
        sqlite="""
    CREATE TABLE inbox_events (
        id              INTEGER PRIMARY KEY,
        source          TEXT NOT NULL,
        event_key       TEXT NOT NULL UNIQUE,
        type            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'received'
                        CHECK (status IN ('received', 'claimed', 'done', 'dead', 'conflict')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT,
        claimed_by      TEXT,
        claimed_until   TEXT,
        received_at     TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    );
    CREATE INDEX inbox_due ON inbox_events (status, next_attempt_at);

    CREATE TABLE cursors (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );

    CREATE TABLE id_links (
        object_type   TEXT NOT NULL,
        nue_id        TEXT NOT NULL,
        salesforce_id TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        PRIMARY KEY (object_type, nue_id),
        UNIQUE (object_type, salesforce_id)
    );

    CREATE TABLE write_intents (
        idem_key   TEXT PRIMARY KEY,
        system     TEXT NOT NULL,
        operation  TEXT NOT NULL,
        target     TEXT NOT NULL,
        request    TEXT NOT NULL,
        event_id   INTEGER REFERENCES inbox_events (id),
        status     TEXT NOT NULL CHECK (status IN ('recorded', 'sent', 'confirmed', 'failed')),
        result     TEXT,
        error      TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX write_intents_event ON write_intents (event_id);

    CREATE TABLE conflicts (
        id                INTEGER PRIMARY KEY,
        event_id          INTEGER REFERENCES inbox_events (id),
        flow              TEXT NOT NULL,
        record_ref        TEXT NOT NULL,
        reason            TEXT NOT NULL,
        nue_values        TEXT NOT NULL,
        salesforce_values TEXT NOT NULL,
        synced_values     TEXT NOT NULL,
        status            TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
        resolution        TEXT CHECK (resolution IN ('nue', 'salesforce', 'skip')),
        resolved_by       TEXT,
        comment           TEXT,
        created_at        TEXT NOT NULL,
        resolved_at       TEXT
    );
    CREATE INDEX conflicts_status ON conflicts (status, id);

    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        event_id    INTEGER REFERENCES inbox_events (id),
        system      TEXT NOT NULL,
        operation   TEXT NOT NULL,
        error       TEXT NOT NULL,
        error_code  TEXT,
        status      INTEGER,
        record_ref  TEXT,
        request     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        replayed_at TEXT
    );
    CREATE INDEX dead_letters_open ON dead_letters (replayed_at, id);

    CREATE TABLE audit_log (
        id              INTEGER PRIMARY KEY,
        at              TEXT NOT NULL,
        system          TEXT NOT NULL,
        operation       TEXT NOT NULL,
        target          TEXT NOT NULL,
        outcome         TEXT NOT NULL,
        idem_key        TEXT,
        event_id        INTEGER,
        record_ref      TEXT,
        status          INTEGER,
        detail          TEXT NOT NULL,
        mapping_version INTEGER
    );
    CREATE INDEX audit_record ON audit_log (record_ref, id);
    """,
        postgres=None,
    ),
    # 2: the newest source version applied per entity, so an older state never overwrites a newer one.
    # (PostgreSQL: in 5.)
    Migration(
        sqlite="""
    CREATE TABLE entity_versions (
        entity     TEXT PRIMARY KEY,
        version    TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
        postgres=None,
    ),
    # 3: the last value revdaemon wrote to (or a person accepted for) each field of a Salesforce record, so a
    # hand edit made since is told apart from an old value; and finished events by time, for the console.
    # (PostgreSQL: in 5.)
    Migration(
        sqlite="""
    CREATE TABLE synced_values (
        record_ref TEXT NOT NULL,
        field      TEXT NOT NULL,
        value      TEXT NOT NULL,
        declined   TEXT,  -- the Nue value a person declined for this field (took Salesforce's), until it changes
        updated_at TEXT NOT NULL,
        PRIMARY KEY (record_ref, field)
    );
    CREATE INDEX inbox_finished ON inbox_events (status, updated_at);
    -- Every event waiting on a conflict: one open conflict per record, and its decision resumes them all.
    ALTER TABLE inbox_events ADD COLUMN conflict_id INTEGER REFERENCES conflicts (id);
    CREATE INDEX inbox_conflict ON inbox_events (conflict_id) WHERE conflict_id IS NOT NULL;
    """,
        postgres=None,
    ),
    # 4: every distinct mapping loaded from config.yaml, numbered in order; and the version each event was first
    # planned with, so a replay writes what that version wrote unless the operator remaps it. (PostgreSQL: in
    # 5.)
    Migration(
        sqlite="""
    CREATE TABLE mapping_versions (
        version      INTEGER PRIMARY KEY,
        content_hash TEXT NOT NULL UNIQUE,
        text         TEXT NOT NULL,
        created_at   TEXT NOT NULL
    );
    ALTER TABLE inbox_events ADD COLUMN mapping_version INTEGER REFERENCES mapping_versions (version);
    """,
        postgres=None,
    ),
    # 5: the daemon processes sharing this store and their last heartbeat (on SQLite, one box: usually one). On
    # PostgreSQL, the whole schema of 1 to 5 in one script (its first release).
    Migration(
        sqlite="""
    CREATE TABLE replicas (
        replica_id     TEXT PRIMARY KEY,
        host           TEXT NOT NULL,
        pid            INTEGER NOT NULL,
        started_at     TEXT NOT NULL,
        last_heartbeat TEXT NOT NULL,
        is_leader      INTEGER NOT NULL DEFAULT 0 CHECK (is_leader IN (0, 1))
    );
    """,
        postgres="""
    CREATE TABLE inbox_events (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        source          TEXT NOT NULL,
        event_key       TEXT COLLATE "C" NOT NULL UNIQUE,
        type            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'received'
                        CHECK (status IN ('received', 'claimed', 'done', 'dead', 'conflict')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        last_error      TEXT,
        claimed_by      TEXT,
        claimed_until   TIMESTAMPTZ,
        received_at     TIMESTAMPTZ NOT NULL,
        updated_at      TIMESTAMPTZ NOT NULL,
        conflict_id     BIGINT,
        mapping_version INTEGER
    );
    -- Claims read only the due and the expired; finished events are the bulk of the table.
    CREATE INDEX inbox_due ON inbox_events (next_attempt_at, id) WHERE status = 'received';
    CREATE INDEX inbox_leases ON inbox_events (claimed_until) WHERE status = 'claimed';
    CREATE INDEX inbox_status ON inbox_events (status, id);
    CREATE INDEX inbox_finished ON inbox_events (status, updated_at);
    CREATE INDEX inbox_conflict ON inbox_events (conflict_id) WHERE conflict_id IS NOT NULL;

    CREATE TABLE cursors (
        name       TEXT COLLATE "C" PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

    CREATE TABLE id_links (
        object_type   TEXT COLLATE "C" NOT NULL,
        nue_id        TEXT COLLATE "C" NOT NULL,
        salesforce_id TEXT COLLATE "C" NOT NULL,
        created_at    TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (object_type, nue_id),
        UNIQUE (object_type, salesforce_id)
    );
    CREATE INDEX id_links_nue ON id_links (nue_id);
    CREATE INDEX id_links_salesforce ON id_links (salesforce_id);

    CREATE TABLE write_intents (
        idem_key   TEXT COLLATE "C" PRIMARY KEY,
        system     TEXT NOT NULL,
        operation  TEXT NOT NULL,
        target     TEXT NOT NULL,
        request    TEXT NOT NULL,
        event_id   BIGINT REFERENCES inbox_events (id),
        status     TEXT NOT NULL CHECK (status IN ('recorded', 'sent', 'confirmed', 'failed')),
        result     TEXT,
        error      TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX write_intents_event ON write_intents (event_id);

    CREATE TABLE conflicts (
        id                BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id          BIGINT REFERENCES inbox_events (id),
        flow              TEXT COLLATE "C" NOT NULL,
        record_ref        TEXT COLLATE "C" NOT NULL,
        reason            TEXT NOT NULL,
        nue_values        TEXT NOT NULL,
        salesforce_values TEXT NOT NULL,
        synced_values     TEXT NOT NULL,
        status            TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
        resolution        TEXT CHECK (resolution IN ('nue', 'salesforce', 'skip')),
        resolved_by       TEXT,
        comment           TEXT,
        created_at        TIMESTAMPTZ NOT NULL,
        resolved_at       TIMESTAMPTZ
    );
    CREATE INDEX conflicts_status ON conflicts (status, id);
    -- One open conflict per record and flow, even when two replicas park events about it at once.
    CREATE UNIQUE INDEX conflicts_one_open ON conflicts (flow, record_ref) WHERE status = 'open';
    ALTER TABLE inbox_events ADD FOREIGN KEY (conflict_id) REFERENCES conflicts (id);

    CREATE TABLE dead_letters (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id    BIGINT REFERENCES inbox_events (id),
        system      TEXT NOT NULL,
        operation   TEXT NOT NULL,
        error       TEXT NOT NULL,
        error_code  TEXT,
        status      INTEGER,
        record_ref  TEXT,
        request     TEXT NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL,
        replayed_at TIMESTAMPTZ
    );
    CREATE INDEX dead_letters_open ON dead_letters (id) WHERE replayed_at IS NULL;

    CREATE TABLE audit_log (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at              TIMESTAMPTZ NOT NULL,
        system          TEXT NOT NULL,
        operation       TEXT NOT NULL,
        target          TEXT NOT NULL,
        outcome         TEXT NOT NULL,
        idem_key        TEXT,
        event_id        BIGINT,
        record_ref      TEXT,
        status          INTEGER,
        detail          TEXT NOT NULL,
        mapping_version INTEGER
    );
    CREATE INDEX audit_record ON audit_log (record_ref, id);
    CREATE INDEX audit_event ON audit_log (event_id, id);

    CREATE TABLE entity_versions (
        entity     TEXT COLLATE "C" PRIMARY KEY,
        version    TEXT COLLATE "C" NOT NULL,  -- fixed-width UTC text, compared byte by byte
        updated_at TIMESTAMPTZ NOT NULL
    );

    CREATE TABLE synced_values (
        record_ref TEXT COLLATE "C" NOT NULL,
        field      TEXT COLLATE "C" NOT NULL,
        value      TEXT NOT NULL,
        declined   TEXT,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (record_ref, field)
    );

    CREATE TABLE mapping_versions (
        version      INTEGER PRIMARY KEY,  -- assigned by the store under a table lock: 1, 2, 3 with no gaps
        content_hash TEXT COLLATE "C" NOT NULL UNIQUE,
        text         TEXT NOT NULL,
        created_at   TIMESTAMPTZ NOT NULL
    );
    ALTER TABLE inbox_events ADD FOREIGN KEY (mapping_version) REFERENCES mapping_versions (version);

    CREATE TABLE replicas (
        replica_id     TEXT COLLATE "C" PRIMARY KEY,
        host           TEXT NOT NULL,
        pid            INTEGER NOT NULL,
        started_at     TIMESTAMPTZ NOT NULL,
        last_heartbeat TIMESTAMPTZ NOT NULL,
        is_leader      BOOLEAN NOT NULL DEFAULT false
    );
    """,
    ),
    # 6: who holds the right to send a write intent, and until when (a lease, as event claims have), so two
    # replicas planning the same write send it once.
    Migration(
        sqlite="""
    ALTER TABLE write_intents ADD COLUMN owner TEXT;
    ALTER TABLE write_intents ADD COLUMN owned_until TEXT;
    """,
        postgres="""
    ALTER TABLE write_intents ADD COLUMN owner TEXT, ADD COLUMN owned_until TIMESTAMPTZ;
    """,
    ),
    # 7: whether a write may ever have reached its API (set when first marked sent, never cleared by a reopen),
    # and until when an unknown outcome is left to settle before it is looked up (issue 22).
    Migration(
        sqlite="""
    ALTER TABLE write_intents ADD COLUMN ever_sent INTEGER NOT NULL DEFAULT 0 CHECK (ever_sent IN (0, 1));
    ALTER TABLE write_intents ADD COLUMN settle_after TEXT;
    UPDATE write_intents SET ever_sent = 1 WHERE status <> 'recorded';
    """,
        postgres="""
    ALTER TABLE write_intents ADD COLUMN ever_sent BOOLEAN NOT NULL DEFAULT false,
                              ADD COLUMN settle_after TIMESTAMPTZ;
    UPDATE write_intents SET ever_sent = true WHERE status <> 'recorded';
    """,
    ),
    # 8: facts about the store itself, e.g. the day it was created (flow 1's default go-live cut-off). A store
    # that already has events was created no later than its first one; a new one records the day it opens.
    Migration(
        sqlite="""
    CREATE TABLE store_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO store_meta (name, value)
        SELECT 'created_on', substr(received_at, 1, 10) FROM inbox_events ORDER BY received_at LIMIT 1;
    """,
        postgres="""
    CREATE TABLE store_meta (
        name  TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO store_meta (name, value)
        SELECT 'created_on', to_char(min(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM inbox_events
        HAVING min(received_at) IS NOT NULL;
    """,
    ),
    # 9: one active replica, fenced. The leadership row: its epoch goes up by one each time a replica (or, on
    # one box, a daemon process) takes leadership; the epoch each claim was made under (a claim of an older
    # epoch is taken over at once) and each intent last recorded or sent under (an older one's send is of
    # unknown outcome). The intents' owner leases of two active replicas go.
    Migration(
        sqlite="""
    CREATE TABLE leadership (
        only_row   INTEGER PRIMARY KEY CHECK (only_row = 1),
        epoch      INTEGER NOT NULL,
        replica_id TEXT,
        since      TEXT
    );
    INSERT INTO leadership (only_row, epoch) VALUES (1, 0);
    ALTER TABLE inbox_events ADD COLUMN claim_epoch INTEGER;
    ALTER TABLE write_intents ADD COLUMN epoch INTEGER;
    ALTER TABLE write_intents DROP COLUMN owner;
    ALTER TABLE write_intents DROP COLUMN owned_until;
    """,
        postgres="""
    CREATE TABLE leadership (
        only_row   BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
        epoch      BIGINT NOT NULL,
        replica_id TEXT,
        since      TIMESTAMPTZ
    );
    INSERT INTO leadership (only_row, epoch) VALUES (true, 0);
    ALTER TABLE inbox_events ADD COLUMN claim_epoch BIGINT;
    ALTER TABLE write_intents ADD COLUMN epoch BIGINT, DROP COLUMN owner, DROP COLUMN owned_until;
    """,
    ),
    # 10: retention (store/retention.py) reads audit entries and settled intents oldest first. The intents of
    # the writes never pruned (retention.KEPT_OPERATIONS) stay out of the index, so a nightly pass never reads
    # them.
    Migration(
        sqlite="""
    CREATE INDEX audit_at ON audit_log (at, id);
    CREATE INDEX write_intents_prunable ON write_intents (updated_at, idem_key)
        WHERE operation NOT IN ('NueActivateOrder', 'NueCreateCustomer', 'NueCreateOrder', 'SfCreate');
    """,
        postgres="""
    CREATE INDEX audit_at ON audit_log (at, id);
    CREATE INDEX write_intents_prunable ON write_intents (updated_at, idem_key)
        WHERE operation NOT IN ('NueActivateOrder', 'NueCreateCustomer', 'NueCreateOrder', 'SfCreate');
    """,
    ),
    # 11: the same indexes on both databases, so one store implementation relies on the same constraints: one open
    # conflict per record and flow is a unique index on SQLite too (PostgreSQL has had it since 5). A SQLite store
    # made in the first days, before a later conflict about a record joined the open one, may hold two open
    # conflicts about one record: the older are closed into the newest (said in their comment), and the events
    # waiting on them wait on it. Audit entries by event and links by either id are indexed on SQLite as well.
    Migration(
        sqlite="""
    UPDATE inbox_events SET conflict_id = (
        SELECT max(newest.id) FROM conflicts AS older
        JOIN conflicts AS newest ON newest.flow = older.flow AND newest.record_ref = older.record_ref
                                AND newest.status = 'open'
        WHERE older.status = 'open' AND (older.id = inbox_events.conflict_id OR older.event_id = inbox_events.id))
    WHERE status = 'conflict' AND EXISTS (
        SELECT 1 FROM conflicts AS older
        JOIN conflicts AS newer ON newer.flow = older.flow AND newer.record_ref = older.record_ref
                               AND newer.status = 'open' AND newer.id > older.id
        WHERE older.status = 'open' AND (older.id = inbox_events.conflict_id OR older.event_id = inbox_events.id));
    UPDATE conflicts SET status = 'resolved', resolved_by = 'revdaemon',
        resolved_at = strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00',
        comment = 'merged into the newest open conflict about this record by the schema upgrade to version 11'
    WHERE status = 'open' AND EXISTS (
        SELECT 1 FROM conflicts AS newer WHERE newer.status = 'open' AND newer.flow = conflicts.flow
                                           AND newer.record_ref = conflicts.record_ref AND newer.id > conflicts.id);
    CREATE UNIQUE INDEX conflicts_one_open ON conflicts (flow, record_ref) WHERE status = 'open';
    CREATE INDEX audit_event ON audit_log (event_id, id);
    CREATE INDEX id_links_nue ON id_links (nue_id);
    CREATE INDEX id_links_salesforce ON id_links (salesforce_id);
    """,
        postgres=None,
    ),
    # 12: what each record is called (an account's name, an order's number), kept from the records the workers
    # read, so the console and the CLI show it beside the id. One row per id and system: a Nue tenant connected
    # to Salesforce gives some Nue records Salesforce ids (nue-api.md).
    Migration(
        sqlite="""
    CREATE TABLE record_names (
        system      TEXT NOT NULL,
        record_id   TEXT NOT NULL,
        object      TEXT NOT NULL,
        name        TEXT,
        number      TEXT,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (record_id, system)
    );
    CREATE INDEX record_names_recent ON record_names (updated_at);
    """,
        postgres="""
    CREATE TABLE record_names (
        system      TEXT COLLATE "C" NOT NULL,
        record_id   TEXT COLLATE "C" NOT NULL,
        object      TEXT COLLATE "C" NOT NULL,
        name        TEXT,
        number      TEXT,
        updated_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (record_id, system)
    );
    CREATE INDEX record_names_recent ON record_names (updated_at);
    """,
    ),
    # 13: shadow mode (engine/shadow.py): what each event would have written, recorded instead of sent. A write's
    # idempotency key is unique, as live mode sends it once; conflicts, errors and "nothing" have none.
    Migration(
        sqlite="""
    CREATE TABLE shadow_plans (
        id          INTEGER PRIMARY KEY,
        at          TEXT NOT NULL,
        event_id    INTEGER,
        event_key   TEXT NOT NULL,
        flow        TEXT NOT NULL,
        outcome     TEXT NOT NULL CHECK (outcome IN ('write', 'conflict', 'error', 'nothing')),
        system      TEXT,
        action      TEXT,
        target      TEXT,
        idem_key    TEXT UNIQUE,
        changes     TEXT NOT NULL,
        warnings    TEXT NOT NULL,
        flags       TEXT NOT NULL,
        note        TEXT
    );
    CREATE INDEX shadow_plans_at ON shadow_plans (at, id);
    """,
        postgres="""
    CREATE TABLE shadow_plans (
        id          BIGSERIAL PRIMARY KEY,
        at          TIMESTAMPTZ NOT NULL,
        event_id    BIGINT,
        event_key   TEXT COLLATE "C" NOT NULL,
        flow        TEXT COLLATE "C" NOT NULL,
        outcome     TEXT NOT NULL CHECK (outcome IN ('write', 'conflict', 'error', 'nothing')),
        system      TEXT,
        action      TEXT,
        target      TEXT,
        idem_key    TEXT COLLATE "C" UNIQUE,
        changes     TEXT NOT NULL,
        warnings    TEXT NOT NULL,
        flags       TEXT NOT NULL,
        note        TEXT
    );
    CREATE INDEX shadow_plans_at ON shadow_plans (at, id);
    """,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

# PostgreSQL stores numbered before the list was shared: their number -> the version it is in this list.
POSTGRES_OWN_NUMBERS = {own: own + 4 for own in range(1, 7)}
# A PostgreSQL store migrated by this list has a version above every number of its own count.
_FIRST_SHARED_ON_POSTGRES = 11


def from_postgres_number(stored: int) -> int:
    """The version of a PostgreSQL store whose `revdaemon_schema` says `stored` (0: no schema yet)."""
    return POSTGRES_OWN_NUMBERS.get(stored, stored) if stored < _FIRST_SHARED_ON_POSTGRES else stored
