"""One ADBC connection to PostgreSQL: transactions, streams, quoting, and the driver's errors
translated where they cross into the pipeline. The only module that imports the driver
(``load/`` as a whole is the only package that talks to the database)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from pipeline.errors import ConfigError, DatabaseError, TransientDatabaseError
from pipeline.load.server import redact, redact_url
from pipeline.sqltext import literal, quoted

__all__ = ["Connection", "connected", "details", "quoted", "translate"]

# Worth a retry: serialization failure, deadlock, the server shutting down or starting up,
# too many connections (class 08, connection exceptions, is retried too).
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53300"}
PERMANENT_HINTS = {
    "28P01": "check the user name and password in the URL",
    "28000": "the server refused this user; check pg_hba.conf and the user name",
    "3D000": "create the database first, or fix its name in the URL",
    "42501": "grant this user CREATE and INSERT on the schema, or use another user",
    "53100": "the server's disk is full: free space on it",
}
DriverError = adbc_driver_manager.Error
RowRefusal = adbc_driver_manager.DatabaseError


class Connection:
    """One connection. Its transactions run one at a time, whichever thread asks: a run's
    connection is shared by its first lane's loader and the run's own ledger rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = self._connect()
        self._in_transaction = threading.RLock()
        self._read_only = False
        self._snapshot: str | None = None

    def _connect(self):
        try:
            # Transactions are explicit (BEGIN/COMMIT) so savepoints survive a failed COPY.
            return adbc.connect(self.url, autocommit=True)
        except adbc_driver_manager.Error as exc:
            raise _connect_error(exc, self.url) from None

    def read_only(self, snapshot: str | None = None) -> None:
        """From now on every transaction is read-only: the server refuses any write (a dry run's
        guarantee, not only its intent); with ``snapshot`` (``exported_snapshot``) each sees the
        database as that snapshot does, whenever it runs. Kept across a reconnect."""
        self._read_only, self._snapshot = True, snapshot
        self.execute("SET default_transaction_read_only = on")

    @contextmanager
    def exported_snapshot(self) -> Iterator[str]:
        """A read-only snapshot of the database, held while the block runs, for other
        connections to read in (``read_only``): what several connections read then agrees."""
        with self.transaction("holding a snapshot of the database"):
            self.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            exported = self.execute("SELECT pg_export_snapshot()")
            assert exported is not None
            yield str(exported.column(0)[0].as_py())

    def reconnect(self) -> None:
        """A new connection after the old one broke (the server restarted, the network dropped)."""
        with suppress(adbc_driver_manager.Error):
            self._connection.close()
        self._connection = self._connect()
        if self._read_only:
            self.read_only(self._snapshot)

    def close(self) -> None:
        self._connection.close()

    def execute(self, sql: str, parameters: tuple | pa.RecordBatch = ()) -> pa.Table | None:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)
            return cursor.fetch_arrow_table() if cursor.description else None

    def ingest(self, name: str, data: pa.Table) -> None:
        """Append ``data`` to the table ``name`` with binary COPY."""
        with self._connection.cursor() as cursor:
            cursor.adbc_ingest(name, data, mode="append")

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        """The result of ``sql`` in Arrow batches of about 16 MB, so a read of millions stays small.

        Only a query without bind parameters is streamed (COPY); libpq holds the whole result
        of a parameterized one, which is why the big reads inline their values (``literal``).
        """
        with self._connection.cursor() as cursor:
            cursor.execute(sql)
            yield from cursor.fetch_record_batch()

    @contextmanager
    def transaction(self, doing: str) -> Iterator[None]:
        """BEGIN … COMMIT; on any error roll back, and translate driver errors at the edge."""
        with self._in_transaction:
            try:
                self.execute("BEGIN")
                if self._snapshot is not None:
                    self.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    self.execute(f"SET TRANSACTION SNAPSHOT {literal(self._snapshot)}")
                yield
                self.execute("COMMIT")
            except adbc_driver_manager.Error as exc:
                self._rollback()
                raise translate(exc, f"database error while {doing} on {redact_url(self.url)}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # When the connection is gone, the error being raised already says so.
        with suppress(adbc_driver_manager.Error):
            self.execute("ROLLBACK")


@contextmanager
def connected(url: str) -> Iterator[Connection]:
    """A connection closed when the block ends."""
    connection = Connection(url)
    try:
        yield connection
    finally:
        connection.close()


def details(exc: Exception) -> dict[str, str]:
    """The server's diagnostic fields of a driver error (``PG_DIAG_...``)."""
    return {
        key.decode(): value.decode(errors="replace")
        for key, value in (getattr(exc, "details", None) or [])
        if isinstance(key, bytes) and isinstance(value, bytes)
    }


def translate(exc: adbc_driver_manager.Error, context: str) -> DatabaseError:
    """A driver error as ours: transient ones are retried, the rest say what to do."""
    sqlstate = getattr(exc, "sqlstate", None) or details(exc).get("PG_DIAG_SQLSTATE") or ""
    message = f"{context}: {_server_message(exc)}"
    if sqlstate in PERMANENT_HINTS:
        return DatabaseError(f"{message}; {PERMANENT_HINTS[sqlstate]}", sqlstate=sqlstate)
    if (
        sqlstate[:2] == "08"
        or sqlstate in TRANSIENT_SQLSTATES
        or (not sqlstate and isinstance(exc, adbc_driver_manager.OperationalError))
    ):
        return TransientDatabaseError(message, sqlstate=sqlstate or None)
    return DatabaseError(message, sqlstate=sqlstate or None)


# libpq's reasons for reaching no server, and what each asks the user to check.
UNREACHABLE = (
    (
        re.compile(
            r'connection to server at "(?P<host>[^"]+)"(?: \([^)]*\))?, '
            r"port (?P<port>\d+) failed: (?P<why>.+)"
        ),
        "nothing answers at {host}:{port} ({why}); check that PostgreSQL runs there and accepts "
        "TCP/IP connections, and the host and port in the URL",
    ),
    (
        re.compile(r'connection to server on socket "(?P<socket>[^"]+)" failed: (?P<why>.+)'),
        "no server listens on the socket {socket} ({why}); check that PostgreSQL runs, and the "
        "socket directory (host=) and port in the URL",
    ),
    (
        re.compile(r'could not translate host name "(?P<host>[^"]+)" to address: (?P<why>.+)'),
        "the host name {host} is not known ({why}); check the host in the URL",
    ),
)


def _connect_error(exc: adbc_driver_manager.Error, url: str) -> ConfigError | DatabaseError:
    """Why a connection failed, in one line naming what to check: a missing database, a server
    that does not answer; else as ``translate`` says."""
    context = f"cannot connect to {redact_url(url)}"
    message = _server_message(exc)
    if missing := re.search(r'FATAL: +database "(?P<name>[^"]+)" does not exist', message):
        name = missing["name"]
        return ConfigError(
            f"{context}: the database {name} does not exist on that server; create it "
            f"(`createdb {name}`) or fix the database name in the URL"
        )
    if problem := _unreachable(message):
        return TransientDatabaseError(f"{context}: {problem}")
    return translate(exc, context)


def _unreachable(message: str) -> str | None:
    """What to check when libpq reached no server; None when a server answered (and refused)."""
    if "FATAL:" in message:
        return None
    for pattern, problem in UNREACHABLE:
        if found := pattern.search(message):
            return problem.format(**{**found.groupdict(), "why": found["why"].strip()})
    return None


def _server_message(exc: Exception) -> str:
    message = details(exc).get("PG_DIAG_MESSAGE_PRIMARY") or str(exc).strip().splitlines()[0]
    return redact(message)
