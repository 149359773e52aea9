"""The two servers the webhook-ingest benchmark compares, each run in its own process.

    python bench/_ingest_servers.py revdaemon  DB PORT TOKEN   the daemon's listener, group commit, store
                                                               (DB: a SQLite file or a postgresql:// URL)
    python bench/_ingest_servers.py reference  DB PORT         a bare ASGI app: one SQLite commit per body

The reference is the floor a durable webhook receiver cannot beat by much: it answers only after the
body is committed (WAL, synchronous=FULL), with no verification, validation or dedupe.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import anyio


async def run_revdaemon(db: Path | str, port: int, token: str) -> None:
    from revdaemon.config import ListenerSettings, NueSettings, WebhookAuth
    from revdaemon.listener.app import ListenerApp
    from revdaemon.listener.group_commit import GroupCommitter
    from revdaemon.listener.http import HttpServer
    from revdaemon.ops.health import Health
    from revdaemon.store import open_store

    store = await open_store(db)
    committer = GroupCommitter(store)
    nue = NueSettings(api_key="bench-api-key", webhook_auth=WebhookAuth.PATH_TOKEN, webhook_path_token=token)
    server = HttpServer(ListenerSettings(port=port, max_connections=1000), ListenerApp(nue, committer, store, Health()))
    async with anyio.create_task_group() as tg:
        await tg.start(committer.run)
        await tg.start(server.serve)
        print("ready", flush=True)


def run_reference(db: Path, port: int) -> None:
    import uvicorn

    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO bodies (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    kind, database, listen = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if kind == "revdaemon":
        # a postgresql:// URL (bench/replicas.py) or the SQLite file
        anyio.run(run_revdaemon, sys.argv[2] if "://" in sys.argv[2] else database, listen, sys.argv[4])
    else:
        run_reference(database, listen)
