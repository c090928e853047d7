"""The baseline for bench_apply: a bare FastAPI endpoint storing the same documents in SQLite.

It does what an apply must do at minimum (parse the JSON body, write one row
per document in one transaction, answer) and nothing else: no validation, no
diff against live state, no reference checks. Run: python bare_apply_server.py PORT DATA_DIR
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request

port, data_dir = int(sys.argv[1]), Path(sys.argv[2])
data_dir.mkdir(parents=True, exist_ok=True)
db = sqlite3.connect(data_dir / "bare.db", check_same_thread=False, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS objects (kind TEXT, name TEXT, spec TEXT, PRIMARY KEY (kind, name))"
)
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/v1/apply")
async def apply(request: Request) -> dict[str, int]:
    body = await request.json()
    db.execute("BEGIN IMMEDIATE")
    for doc in body["documents"]:
        db.execute(
            "INSERT OR REPLACE INTO objects VALUES (?, ?, ?)",
            (doc["kind"], doc["metadata"]["name"], json.dumps(doc["spec"], sort_keys=True)),
        )
    db.execute("COMMIT")
    return {"count": len(body["documents"])}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
