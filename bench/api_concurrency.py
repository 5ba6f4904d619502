"""
The API under concurrent clients, through Nginx over HTTPS, as a burst of
customers' admins (and their scripts) would use it: the lab's deployed API (2
uvicorn workers), Nginx on 127.28.0.13, PostgreSQL through pgBouncer.

    .venv/bin/python bench/api_concurrency.py [--runs 3] [--levels 50,200,500] [--requests 20]

At each level, that many clients at once, each on its own kept-alive connection,
send --requests authenticated GET /v1/tenants?limit=5. Baseline, in the same run:
the same clients straight at the API (no Nginx, no TLS). Prints requests/s, p50
and p99 latency, 5xx and other errors (the API must answer no 5xx), medians of
--runs runs, the ratio Nginx/API, and the machine's load during the run.
"""

import argparse
import http.client
import os
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

import requests
from api_bench import rate_and_percentiles, run_together  # the lookup benchmark's client timing
from api_bench import support  # the tree's test helpers, on the path api_bench sets

REPO = Path(__file__).resolve().parent.parent
NGINX, NAME, API = "127.28.0.13", "api.gopbx.au", ("127.28.0.30", 8080)
PATH = "/v1/tenants?limit=5"


def token():
    secrets = support.lab_secrets()
    reply = requests.post(f"http://{API[0]}:{API[1]}/v1/token", timeout=30,
                          json={"username": "admin", "password": secrets["api"]["admin_password"]})
    reply.raise_for_status()
    return reply.json()["access_token"]


class NginxConnection(http.client.HTTPSConnection):
    """HTTPS to the lab's Nginx by address, with api.gopbx.au in SNI and the certificate checked for it."""

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=NAME)


def through_nginx():
    return NginxConnection(NGINX, 443, timeout=60, context=ssl.create_default_context(cafile="/etc/nginx/tls/cert.pem"))


def straight_at_the_api():
    return http.client.HTTPConnection(*API, timeout=60)


def run(connect, clients, per_client, bearer):
    """(requests/s, p50 ms, p99 ms, 5xx, other errors) for ``clients`` clients at once."""
    latencies, server_errors, failures = [], [0], [0]
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    headers = {"Authorization": f"Bearer {bearer}", "Host": NAME}

    def client():
        connection, mine = connect(), []
        barrier.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                connection.request("GET", PATH, headers=headers)
                reply = connection.getresponse()
                reply.read()
                mine.append((time.perf_counter() - started) * 1000)
                if reply.status >= 500:
                    with lock:
                        server_errors[0] += 1
            except (OSError, http.client.HTTPException):
                with lock:
                    failures[0] += 1
                connection.close()
                connection = connect()
        with lock:
            latencies.extend(mine)

    elapsed = run_together([threading.Thread(target=client) for _ in range(clients)], barrier)
    if not latencies:
        return (0.0, float("nan"), float("nan"), server_errors[0], failures[0])
    return (*rate_and_percentiles(latencies, elapsed), server_errors[0], failures[0])


def median_of(results):
    return tuple(statistics.median(result[i] for result in results) for i in range(3)) + (
        sum(result[3] for result in results), sum(result[4] for result in results))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--levels", default="50,200,500")
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    args = parser.parse_args()
    bearer = token()
    rows = []
    for clients in map(int, args.levels.split(",")):
        nginx, api, loads = [], [], []
        for _ in range(args.runs):
            nginx.append(run(through_nginx, clients, args.requests, bearer))
            api.append(run(straight_at_the_api, clients, args.requests, bearer))
            loads.append(os.getloadavg()[0])
        rows.append((clients, median_of(nginx), median_of(api), max(loads)))
    print(f"\nGET {PATH} with a token, {args.requests} requests per client on a kept-alive connection, "
          f"medians of {args.runs} runs (errors: totals)")
    header = ("clients", "Nginx req/s", "p50 ms", "p99 ms", "5xx", "errors", "API req/s", "p50 ms", "p99 ms", "5xx",
              "errors", "Nginx/API", "load")
    print(" | ".join(f"{h:>11}" for h in header))
    for clients, (n_rate, n_p50, n_p99, n_5xx, n_err), (a_rate, a_p50, a_p99, a_5xx, a_err), load in rows:
        cells = [clients, f"{n_rate:.0f}", f"{n_p50:.1f}", f"{n_p99:.1f}", n_5xx, n_err, f"{a_rate:.0f}",
                 f"{a_p50:.1f}", f"{a_p99:.1f}", a_5xx, a_err, f"{n_rate / a_rate:.2f}", f"{load:.1f}"]
        print(" | ".join(f"{str(c):>11}" for c in cells))
    if any(row[1][3] or row[2][3] for row in rows):
        sys.exit("the API answered 5xx")


if __name__ == "__main__":
    main()
