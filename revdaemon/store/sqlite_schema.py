"""SQLite schema migrations, numbered by `PRAGMA user_version`.

Append a new script for every change; never edit one that has shipped. The store applies the missing
ones at start, each in its own transaction, and refuses a database whose version is newer than this list.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
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
    # 2: the newest source version applied per entity, so an older state never overwrites a newer one.
    """
    CREATE TABLE entity_versions (
        entity     TEXT PRIMARY KEY,
        version    TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 3: the last value revdaemon wrote to (or a person accepted for) each field of a Salesforce record, so a
    # hand edit made since is told apart from an old value; and finished events by time, for the console.
    """
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
    # 4: every distinct mapping loaded from config.yaml, numbered in order; and the version each event was
    # first planned with, so a replay writes what that version wrote unless the operator remaps it.
    """
    CREATE TABLE mapping_versions (
        version      INTEGER PRIMARY KEY,
        content_hash TEXT NOT NULL UNIQUE,
        text         TEXT NOT NULL,
        created_at   TEXT NOT NULL
    );
    ALTER TABLE inbox_events ADD COLUMN mapping_version INTEGER REFERENCES mapping_versions (version);
    """,
    # 5: the daemon processes sharing this store and their last heartbeat (on SQLite, one box: usually one).
    """
    CREATE TABLE replicas (
        replica_id     TEXT PRIMARY KEY,
        host           TEXT NOT NULL,
        pid            INTEGER NOT NULL,
        started_at     TEXT NOT NULL,
        last_heartbeat TEXT NOT NULL,
        is_leader      INTEGER NOT NULL DEFAULT 0 CHECK (is_leader IN (0, 1))
    );
    """,
    # 6: who holds the right to send a write intent, and until when (a lease, as event claims have), so two
    # replicas planning the same write send it once.
    """
    ALTER TABLE write_intents ADD COLUMN owner TEXT;
    ALTER TABLE write_intents ADD COLUMN owned_until TEXT;
    """,
    # 7: whether a write may ever have reached its API (set when first marked sent, never cleared by a reopen),
    # and until when an unknown outcome is left to settle before it is looked up (issue 22).
    """
    ALTER TABLE write_intents ADD COLUMN ever_sent INTEGER NOT NULL DEFAULT 0 CHECK (ever_sent IN (0, 1));
    ALTER TABLE write_intents ADD COLUMN settle_after TEXT;
    UPDATE write_intents SET ever_sent = 1 WHERE status <> 'recorded';
    """,
    # 8: facts about the store itself, e.g. the day it was created (flow 1's default go-live cut-off). A store
    # that already has events was created no later than its first one; a new one records the day it opens.
    """
    CREATE TABLE store_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO store_meta (name, value)
        SELECT 'created_on', substr(received_at, 1, 10) FROM inbox_events ORDER BY received_at LIMIT 1;
    """,
    # 9: one active replica, fenced. The leadership row: its epoch goes up by one each time a replica (or, on one
    # box, a daemon process) takes leadership; the epoch each claim was made under (a claim of an older epoch is
    # taken over at once) and each intent last recorded or sent under (an older one's send is of unknown
    # outcome). The intents' owner leases of two active replicas go.
    """
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
    # 10: retention (store/retention.py) reads audit entries and settled intents oldest first. The intents of the
    # writes never pruned (retention.KEPT_OPERATIONS) stay out of the index, so a nightly pass never reads them.
    """
    CREATE INDEX audit_at ON audit_log (at, id);
    CREATE INDEX write_intents_prunable ON write_intents (updated_at, idem_key)
        WHERE operation NOT IN ('NueActivateOrder', 'NueCreateCustomer', 'NueCreateOrder', 'SfCreate');
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
