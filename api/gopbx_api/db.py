"""PostgreSQL through pgBouncer (transaction mode): one transaction per request that writes."""

import threading
from contextlib import contextmanager

import psycopg2
import psycopg2.extras
import psycopg2.pool


class Busy(Exception):
    """No connection came free in time: the caller should answer 503 with Retry-After."""


class Database:
    """
    A bounded pool that waits. psycopg2's ThreadedConnectionPool raises as soon as
    all its connections are out, while FastAPI runs up to 40 sync handlers at once:
    under a burst that was a 500 for every request over the pool's size. Here a
    request waits up to ``wait_seconds`` for a connection, then gets Busy (503).
    Size maxconn per worker so that workers x maxconn stays under pgBouncer's
    default_pool_size (the api formula does: 2 workers x 15 < 40).
    """

    def __init__(self, dsn, minconn=1, maxconn=15, wait_seconds=5.0):
        self.pool = psycopg2.pool.ThreadedConnectionPool(minconn, maxconn, dsn)
        self.slots = threading.BoundedSemaphore(maxconn)
        self.wait_seconds = wait_seconds

    @contextmanager
    def transaction(self):
        """A cursor in one transaction: committed on success, rolled back on any error."""
        if not self.slots.acquire(timeout=self.wait_seconds):
            raise Busy(f"no database connection free within {self.wait_seconds:g} s")
        try:
            conn = self.pool.getconn()
            try:
                with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    yield cursor
            finally:
                # A connection that broke (pgBouncer restarted, say) is dropped, not reused.
                self.pool.putconn(conn, close=bool(conn.closed))
        finally:
            self.slots.release()

    def close(self):
        self.pool.closeall()


def audit(cursor, actor, action, object_type, object_id, detail=None):
    cursor.execute("INSERT INTO gopbx.audit (actor, action, object_type, object_id, detail) "
                   "VALUES (%s, %s, %s, %s, %s)",
                   (actor, action, object_type, object_id, psycopg2.extras.Json(detail or {})))


def page(request, query, params, limit, offset):
    """One page of a listing: ``query`` selects ``count(*) OVER () AS total`` beside its columns."""
    with request.app.state.db.transaction() as cursor:
        cursor.execute(f"{query} LIMIT %s OFFSET %s", (*params, limit, offset))
        rows = cursor.fetchall()
    return {"items": [{k: v for k, v in row.items() if k != "total"} for row in rows],
            "total": rows[0]["total"] if rows else 0, "limit": limit, "offset": offset}
