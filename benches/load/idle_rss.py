#!/usr/bin/env python3
"""Holds N idle TCP connections to a KMS host and reports the host's memory.

    idle_rss.py [--count 10000] [--hold 5] 'command with {port}'

Starts the host on a free 127.0.0.1 port (its stdout/stderr discarded), reads its
VmRSS before, opens COUNT connections that send nothing (in batches, checking that
each connected), waits HOLD seconds, reads VmRSS/VmHWM again, checks that a new
connection still gets a bind_ack (the host is not locked out), closes everything
and stops the host by its pid. Give the host an idle timeout longer than the run
and a connection cap of at least COUNT. Needs `ulimit -n` above COUNT + 100.
"""
import argparse, json, os, shlex, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_VECTOR = os.path.join(HERE, "..", "..", "..", "shared", "vectors", "v6-ndr32-btfn-win10ent.json")

def first_bind(vector):
    """The client's first PDU (a bind) of the vector's first connection."""
    conn = json.load(open(vector))["connections"][0]
    data = bytes.fromhex(next(r["hex"] for r in conn if r["dir"] == "c2s"))
    return data[:int.from_bytes(data[8:10], "little")]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"): out[k] = int(v.split()[0])  # KiB
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=5)
    ap.add_argument("--vector", default=DEFAULT_VECTOR)
    ap.add_argument("server")
    a = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(shlex.split(a.server.replace("{port}", str(port))),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks = []
    try:
        for _ in range(100):
            try: socket.create_connection(("127.0.0.1", port), 0.2).close(); break
            except OSError: time.sleep(0.05)
        time.sleep(0.5)
        before = status(proc.pid)
        t0 = time.time()
        for i in range(a.count):
            s = socket.socket(); s.settimeout(5); s.connect(("127.0.0.1", port)); socks.append(s)
        opened = time.time() - t0
        time.sleep(a.hold)
        held = status(proc.pid)
        # Every connection still open: none got EOF.
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                alive += 1 if s.recv(1) else 0
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        probe = socket.create_connection(("127.0.0.1", port), 5); probe.settimeout(5)
        probe.sendall(first_bind(a.vector)); ack = probe.recv(4096); probe.close()
        print(f"connections {a.count} opened in {opened:.2f} s, still open after {a.hold:.0f} s: {alive}")
        print(f"host VmRSS before {before['VmRSS']/1024:.1f} MiB, holding {held['VmRSS']/1024:.1f} MiB "
              f"(VmHWM {held['VmHWM']/1024:.1f} MiB), "
              f"{(held['VmRSS']-before['VmRSS'])*1024/a.count:.0f} bytes per idle connection")
        print(f"new client while holding them: {'bind_ack' if ack[2:3] == bytes([12]) else 'NO bind_ack: ' + ack[:16].hex()}")
    finally:
        for s in socks: s.close()
        proc.terminate()
        try: proc.wait(5)
        except subprocess.TimeoutExpired: proc.kill()

if __name__ == "__main__":
    sys.exit(main())
