#!/usr/bin/env python3
"""kms-host on each count store, side by side in one interleaved run.

    benches/load/stores.py [--duration 5] [--repeat 2] [--conc 64] [--clients 100000]
                           [--modes new,keepalive] [--tools kmsload,kms-client]
                           [--postgres URL] [--no-build]

Starts kms-host (release) three times, on the memory, SQLite and PostgreSQL
stores, each on its own free loopback port, then runs every load against
every host in turn, round after round (so the machine's noise falls on all
of them alike):

* `kmsload` (../shared/bench) replays one captured Windows 10 request: one
  CMID, so after the first request every decision is a renewal;
* `kms-client --load --clients N`: N distinct clients (CMIDs from a seed),
  so the stores insert, and renew once the N have been seen.

Each in both modes: a new TCP connection per activation (as Windows
clients do) and keep-alive. Prints one Markdown row per tool, mode and
store with the median activations/s, its ratio to the memory store, p50 and
p99 latency and the errors. PostgreSQL gets a database of its own
(`kms_load_bench`, dropped and created at start) on the server of --postgres.

Not part of CI: timed figures belong in benches/README.md, not in tests.
"""
import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("SHARED", os.path.join(ROOT, "..", "shared"))
VECTOR = os.path.join(SHARED, "vectors", "v6-ndr32-btfn-win10ent.json")
TOOLS = os.path.join(ROOT, "target", "bench-tools", "release")
RELEASE = os.path.join(ROOT, "target", "release")
BENCH_DB = "kms_load_bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def build():
    run = lambda *cmd: subprocess.run(cmd, cwd=ROOT, check=True)
    run("cargo", "build", "--release", "--features", "cli", "--bin", "kms-host", "--bin", "kms-client")
    for tool in ("kmsload",):
        run("cargo", "build", "--release", "--manifest-path",
            os.path.join(SHARED, "bench", tool, "Cargo.toml"), "--target-dir",
            os.path.join(ROOT, "target", "bench-tools"))


def fresh_database(url):
    """Drops and creates BENCH_DB on url's server; returns its URL."""
    subprocess.run(["psql", url, "-qc", f"DROP DATABASE IF EXISTS {BENCH_DB}"], check=True)
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {BENCH_DB}"], check=True)
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + BENCH_DB))


def kmsload(port, conc, keepalive, duration, _clients):
    cmd = [os.path.join(TOOLS, "kmsload"), "--target", f"127.0.0.1:{port}", "--vector", VECTOR,
           "--concurrency", str(conc), "--duration", str(duration), "--json"]
    if keepalive:
        cmd.append("--keepalive")
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()
    r = json.loads(out[-1]) if out else {}
    return {
        "rate": r.get("activations_per_s", 0.0),
        "p50": r.get("latency_ms", {}).get("p50"),
        "p99": r.get("latency_ms", {}).get("p99"),
        "errors": r.get("errors_total", 1 if not r else 0),
    }


def kms_client(port, conc, keepalive, duration, clients):
    cmd = [os.path.join(RELEASE, "kms-client"), f"127.0.0.1:{port}", "--load", "-c", str(conc),
           "--clients", str(clients), "--duration", f"{duration}s", "--json"]
    if keepalive:
        cmd.append("--keepalive")
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    r = json.loads(out) if out else {}
    latency = r.get("latency_ms") or {}
    return {
        "rate": r.get("activations_per_second", 0.0),
        "p50": latency.get("p50"),
        "p99": latency.get("p99"),
        "errors": sum(r.get("errors", {}).values()) + r.get("answered", 0) - r.get("activations", 0),
    }


LOADS = {"kmsload": kmsload, "kms-client": kms_client}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--clients", type=int, default=100_000)
    ap.add_argument("--modes", default="new,keepalive")
    ap.add_argument("--tools", default="kmsload,kms-client")
    ap.add_argument("--postgres", default=os.environ.get(
        "KMS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        build()
    sqlite = os.path.join(ROOT, "target", "load-store.sqlite")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(sqlite + suffix):
            os.remove(sqlite + suffix)
    stores = [("memory", "memory"), ("sqlite", f"sqlite:{sqlite}"),
              ("postgres", fresh_database(a.postgres))]
    host = os.path.join(RELEASE, "kms-host")
    env = dict(os.environ, RUST_LOG="warn")
    servers, procs = [], []
    try:
        for name, store in stores:
            port = free_port()
            # --skew off: kmsload replays a capture with a fixed client time.
            cmd = [host, "--skew", "off", "--store", store, "--listen", f"127.0.0.1:{port}"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if not wait_port(port):
                sys.exit(f"kms-host on {name} did not listen: {shlex.join(cmd)}")
            servers.append((name, port))
        results = {}
        for _ in range(a.repeat):
            for tool in a.tools.split(","):
                for mode in a.modes.split(","):
                    for name, port in servers:
                        r = LOADS[tool](port, a.conc, mode == "keepalive", a.duration, a.clients)
                        results.setdefault((tool, mode, name), []).append(r)
        print(f"| load ({a.conc} clients) | mode | store | activations/s (median of {a.repeat}) "
              f"| vs memory | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for tool in a.tools.split(","):
            for mode in a.modes.split(","):
                base = None
                for name, _ in servers:
                    runs = results[(tool, mode, name)]
                    rate = statistics.median(r["rate"] for r in runs)
                    base = base or rate or 1.0
                    med = lambda key: statistics.median(r[key] for r in runs if r[key] is not None) \
                        if any(r[key] is not None for r in runs) else float("nan")
                    label = tool if tool == "kmsload" else f"kms-client --clients {a.clients}"
                    mode_label = "new connection" if mode == "new" else "keep-alive"
                    print(f"| {label} | {mode_label} | {name} | {rate:,.0f} | {rate / base:.2f}× "
                          f"| {med('p50'):.1f} | {med('p99'):.1f} | {sum(r['errors'] for r in runs)} |"
                          .replace(",", " "))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
