"""DBOS Transact on SQLite: a workflow of N steps, stock and tuned.

DBOS is a process-wide singleton, so each configuration runs in its own
subprocess (``python -m benchmarks.peers.dbos_peer MODE DB``) that stays up for
the whole scenario and answers ``N`` on stdin with the seconds a workflow of N
steps took, on one JSON line. That lets the scenario interleave DBOS runs with
durable's, repetition by repetition.

Durability settings (DBOS 3.x creates its own SQLAlchemy engine for SQLite and
sets only ``busy_timeout``, ``foreign_keys`` and IMMEDIATE transactions):

- ``stock``: SQLite's defaults, rollback journal (``journal_mode=DELETE``) with
  ``synchronous=FULL``: every commit is fsynced.
- ``tuned``: the same engine plus ``journal_mode=WAL`` and ``synchronous=NORMAL``
  on every connection (a listener on SQLAlchemy's ``connect`` event, added before
  DBOS creates its engine): commits reach the WAL without an fsync each; a
  power loss can lose the last transactions, like Redis ``appendfsync everysec``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from ..common import require, spawn, stop, version

MODES = {
    "stock": "SQLite journal_mode=DELETE, synchronous=FULL (stock)",
    "tuned": "SQLite journal_mode=WAL, synchronous=NORMAL",
}


class DbosPeer:
    """A DBOS subprocess in ``mode`` with its SQLite database under ``directory``."""

    def __init__(self, mode: str, directory: Path) -> None:
        require("dbos", "dbos")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}")
        self.mode = mode
        self.directory = directory
        self.proc: Any = None
        self.settings: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return f"DBOS {version('dbos')} workflow of steps, {MODES[self.mode]}"

    def start(self) -> DbosPeer:
        import subprocess

        db = self.directory / f"dbos-{self.mode}.sqlite"
        argv = [sys.executable, "-m", "benchmarks.peers.dbos_peer", self.mode, str(db)]
        self.proc = spawn(argv, self.directory / f"dbos-{self.mode}.log", stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        self.settings = self._read(timeout=120)  # launched: reports its PRAGMAs
        self.run(3)  # warm-up
        return self

    def run(self, steps: int) -> float:
        """Seconds for one workflow of ``steps`` steps, called in the DBOS process."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{steps}\n".encode())
        self.proc.stdin.flush()
        return float(self._read(timeout=600)["seconds"])

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"DBOS {self.mode} process exited ({self.proc.poll()}); see its log in "
                               f"{self.directory}")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc is not None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except Exception:
                pass
            stop(self.proc)
            self.proc = None


# -- the subprocess --------------------------------------------------------------------------


def _serve(mode: str, db: str, out: IO[str]) -> None:
    import sqlalchemy as sa
    from dbos import DBOS

    if mode == "tuned":
        @sa.event.listens_for(sa.engine.Engine, "connect")
        def _tune(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    DBOS(config={"name": "durable-bench", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"})

    @DBOS.step()
    def step(i: int) -> int:
        return i

    @DBOS.workflow()
    def steps(n: int) -> int:
        result = 0
        for i in range(n):
            result = step(i)
        return result

    DBOS.launch()
    # A plain connection to read the settings back: it gets the same listener as DBOS's own.
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    engine.dispose()
    synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(int(level or 0), str(level))
    out.write(json.dumps({"journal_mode": journal, "synchronous": synchronous}) + "\n")
    out.flush()
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        n = int(command)
        start = time.perf_counter()
        steps(n)
        out.write(json.dumps({"seconds": time.perf_counter() - start}) + "\n")
        out.flush()
    DBOS.destroy()


def main(argv: list[str]) -> int:
    mode, db = argv
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(db + suffix)
        except FileNotFoundError:
            pass
    # Answers go to the original stdout; everything DBOS prints goes to stderr (the log).
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(mode, db, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
