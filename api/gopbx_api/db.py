"""PostgreSQL through pgBouncer (transaction mode): one transaction per request that writes."""

from contextlib import contextmanager

import psycopg2
import psycopg2.extras
import psycopg2.pool


class Database:
    def __init__(self, dsn, minconn=1, maxconn=10):
        self.pool = psycopg2.pool.ThreadedConnectionPool(minconn, maxconn, dsn)

    @contextmanager
    def transaction(self):
        """A cursor in one transaction: committed on success, rolled back on any error."""
        conn = self.pool.getconn()
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                yield cursor
        finally:
            self.pool.putconn(conn)

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
