"""
Control-plane API benchmark, against the lab's deployed API (2 uvicorn workers on
127.28.0.30:8080), PostgreSQL through pgBouncer, and Kamailio:

    .venv/bin/python bench/api_bench.py [--runs 3] [--scale 800:3000] [--factor 10]

1. Provisions the seed's scale through the API (800 tenants, 3,000 extensions),
   eight clients at once; each tenant write also reloads Kamailio's domains.
2. mod_xml_curl directory lookups, as a FreeSWITCH node makes them (HTTP Basic,
   from the node's own address, keep-alive), eight clients at once, random users:
   lookups/s, p50 and p99. Baseline, in the same run: the same lookup as a bare SQL
   query through pgBouncer, eight connections at once.
3. Provisions up to ten times the scale and measures the lookups again.
Medians over --runs runs (the API and the baseline alternate within each run).
Everything it made is removed at the end.
"""

import argparse
import base64
import http.client
import random
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "api"))

from gopbx_api.passwords import hash_password  # noqa: E402
from tests import support  # noqa: E402
from tests.system import sip  # noqa: E402

API = "http://127.28.0.30:8080"
SUFFIX = ".bench.invalid"
NODE, NODE_ADDRESS, NODE_PASSWORD = "fs-bench-1", "127.28.4.1", "bench-node-password-1"
CLIENTS = 8
LOOKUPS_PER_CLIENT = 250
LOOKUP_SQL = ("SELECT e.number, e.caller_id_name, s.ha1 FROM gopbx.extensions e "
              "JOIN gopbx.tenants t ON t.id = e.tenant_id "
              "JOIN subscriber s ON s.username = e.number AND s.domain = t.domain "
              "WHERE t.domain = %s AND e.number = %s AND e.enabled AND t.enabled")


def lab_secrets():
    return support.lab_secrets()


def token(secrets):
    reply = requests.post(f"{API}/v1/token", json={"username": "admin", "password": secrets["api"]["admin_password"]},
                          timeout=10)
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def tenant_name(n):
    return f"t{n:05d}{SUFFIX}"


def users_of(tenants, extensions):
    """Extensions spread over tenants: (domain, number) pairs, numbers from 1000 per tenant."""
    return [(tenant_name(i % tenants), str(1000 + i // tenants)) for i in range(extensions)]


def provision(headers, tenants_from, tenants_to, users):
    session_of = threading.local()

    def post(path, body):
        session = getattr(session_of, "session", None) or requests.Session()
        session_of.session = session
        reply = session.post(f"{API}{path}", json=body, headers=headers, timeout=60)
        if reply.status_code != 201:
            raise RuntimeError(f"{path}: {reply.status_code} {reply.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda n: post("/v1/tenants", {"domain": tenant_name(n), "name": f"Bench {n}", "max_calls": 20,
                                                      "calls_per_second": 10, "dispatcher_set": 1}),
                      range(tenants_from, tenants_to)))
    tenant_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda user: post(f"/v1/tenants/{user[0]}/extensions",
                                        {"number": user[1], "password": "Bench-Passw0rd-1"}), users))
    return tenant_seconds, time.perf_counter() - started


def measure(lookup_factory, users):
    """Lookups/s and per-lookup latencies (ms) with CLIENTS clients at once."""
    latencies, barrier = [], threading.Barrier(CLIENTS + 1)

    def client(seed):
        lookup = lookup_factory()
        rng = random.Random(seed)
        mine = []
        barrier.wait()
        for _ in range(LOOKUPS_PER_CLIENT):
            domain, number = rng.choice(users)
            started = time.perf_counter()
            lookup(domain, number)
            mine.append((time.perf_counter() - started) * 1000)
        latencies.extend(mine)

    elapsed = run_together([threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)], barrier)
    return rate_and_percentiles(latencies, elapsed)


def run_together(threads, barrier):
    """Start the clients, release them at once (the barrier); seconds until the last is done."""
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def rate_and_percentiles(latencies, elapsed):
    """(per second, p50, p99) of latencies (ms) measured over elapsed seconds."""
    ordered = sorted(latencies)
    return (len(ordered) / elapsed, ordered[len(ordered) // 2], ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)])


def connect():
    connection = http.client.HTTPConnection("127.28.0.30", 8080, timeout=10, source_address=(NODE_ADDRESS, 0))
    connection.connect()
    # As libcurl (mod_xml_curl) does.
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def api_lookup(keepalive):
    """mod_xml_curl makes a new curl handle, so a new connection, for every fetch: so does this, unless keepalive."""
    auth = "Basic " + base64.b64encode(f"{NODE}:{NODE_PASSWORD}".encode()).decode()
    kept = connect() if keepalive else None

    def lookup(domain, number):
        connection = kept or connect()
        body = urlencode({"section": "directory", "tag_name": "domain", "key_name": "name", "key_value": domain,
                          "user": number, "domain": domain, "action": "sip_auth"})
        connection.request("POST", "/v1/freeswitch/directory", body=body,
                           headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
        reply = connection.getresponse()
        text = reply.read()
        if not kept:
            connection.close()
        if reply.status != 200 or b'user id="' + number.encode() not in text:
            raise RuntimeError(f"lookup of {number}@{domain}: {reply.status} {text[:200]!r}")

    return lookup


def sql_lookup(secrets):
    def factory():
        conn = sip.db(secrets, "gopbx_api")
        conn.autocommit = True
        cursor = conn.cursor()

        def lookup(domain, number):
            cursor.execute(LOOKUP_SQL, (domain, number))
            if cursor.fetchone() is None:
                raise RuntimeError(f"no row for {number}@{domain}")

        return lookup

    return factory


def lookups(secrets, users, runs, keepalive):
    api, sql = [], []
    for _ in range(runs):
        api.append(measure(lambda: api_lookup(keepalive), users))
        sql.append(measure(sql_lookup(secrets), users))
    return [tuple(statistics.median(run[i] for run in results) for i in range(3)) for results in (api, sql)]


def register_node(secrets):
    with sip.db(secrets, "gopbx_salt") as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM gopbx.nodes WHERE minion_id = %s", (NODE,))
        cursor.execute("INSERT INTO gopbx.nodes (minion_id, address, setid, capacity, xml_curl_password_hash) "
                       "VALUES (%s, %s, 1, 1000, %s)", (NODE, NODE_ADDRESS, hash_password(NODE_PASSWORD)))


def clean(secrets):
    with sip.db(secrets, "gopbx_api") as conn, conn.cursor() as cursor:
        for table, column in (("subscriber", "domain"), ("domain_attrs", "did"), ("domain", "domain"),
                              ("gopbx.tenants", "domain")):
            cursor.execute(f"DELETE FROM {table} WHERE {column} LIKE %s", (f"%{SUFFIX}",))
    with sip.db(secrets, "gopbx_salt") as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM gopbx.nodes WHERE minion_id = %s", (NODE,))
    sip.rpc("domain.reload")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", default="800:3000", help="tenants:extensions (the seed's)")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--keepalive", action="store_true", help="reuse each client's connection")
    args = parser.parse_args()
    tenants, extensions = map(int, args.scale.split(":"))
    secrets = lab_secrets()
    clean(secrets)
    register_node(secrets)
    headers = token(secrets)
    rows, provisioned = [], 0
    try:
        for factor in (1, args.factor):
            target_tenants, target_extensions = tenants * factor, extensions * factor
            every_user = users_of(target_tenants, target_extensions)
            already = set(users_of(tenants, extensions)) if provisioned else set()
            new_users = [user for user in every_user if user not in already]
            tenant_s, extension_s = provision(headers, provisioned, target_tenants, new_users)
            provisioned = target_tenants
            api, sql = lookups(secrets, every_user, args.runs, args.keepalive)
            rows.append((f"{factor}x", target_tenants, target_extensions,
                         f"{(target_tenants - (tenants if factor > 1 else 0)) / tenant_s:.0f}",
                         f"{len(new_users) / extension_s:.0f}", *api, *sql))
    finally:
        clean(secrets)
    print(f"\nxml_curl directory lookups, {CLIENTS} clients x {LOOKUPS_PER_CLIENT}, "
          f"{'kept-alive connections' if args.keepalive else 'a new connection per lookup'}, "
          f"medians of {args.runs} runs")
    header = ("scale", "tenants", "exts", "tenants/s", "exts/s", "API lk/s", "p50 ms", "p99 ms", "SQL lk/s",
              "p50 ms", "p99 ms", "API/SQL")
    print(" | ".join(f"{h:>9}" for h in header))
    for row in rows:
        cells = [*row[:5], f"{row[5]:.0f}", f"{row[6]:.2f}", f"{row[7]:.2f}", f"{row[8]:.0f}", f"{row[9]:.2f}",
                 f"{row[10]:.2f}", f"{row[5] / row[8]:.2f}"]
        print(" | ".join(f"{str(c):>9}" for c in cells))


if __name__ == "__main__":
    main()
