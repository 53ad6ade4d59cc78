#!/usr/bin/env python3
"""pingscope startup, inside the private network namespace run.sh made (unshare --net): time from
spawn to the first HTTP answer on /-/healthy, to the first echo reply the kernel delivers
(/proc/net/snmp InEchoReps), and the RSS once idle (with its anonymous part, the process's own
memory, and its file part, the binary's and libraries' pages, which depend on the page cache). One target, 127.0.0.1, at 1 s.
Prints one JSON line. Polling is a tight loop bounded to 5 s."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def in_echo_reps():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Icmp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))["InEchoReps"]


def healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as s:
            s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def one_target(prefix):
    """Brings the namespace's loopback up, lets every group open ICMP sockets, and writes a
    config of one target (127.0.0.1 at 1 s) into a new directory: (directory, config path)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")
    work = tempfile.mkdtemp(prefix=prefix)
    cfg = os.path.join(work, "p.yml")
    with open(cfg, "w") as f:
        f.write(f"sessions:\n  database: {work}/s.db\ntargets:\n  - host: 127.0.0.1\n")
    return work, cfg


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/pingscope"
    work, cfg = one_target("bench-startup-")
    base = in_echo_reps()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve", "--config.file", cfg, "--web.listen-address",
                          "127.0.0.1:9901", "--log.level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http_at = reply_at = None
    try:
        while time.perf_counter() - t0 < 5 and (http_at is None or reply_at is None):
            if reply_at is None and in_echo_reps() > base:
                reply_at = time.perf_counter() - t0
            if http_at is None and healthy(9901):
                http_at = time.perf_counter() - t0
        time.sleep(3)
        with open(f"/proc/{p.pid}/status") as f:
            status = {l.split(":")[0]: l.split()[1] for l in f if l.startswith(("VmRSS", "RssAnon", "RssFile"))}
    finally:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", work])
    print(json.dumps({"tool": "startup", "http_ready_s": http_at, "first_reply_s": reply_at,
                      "idle_rss_kib": int(status["VmRSS"]),
                      "idle_rss_anon_kib": int(status["RssAnon"]),
                      "idle_rss_file_kib": int(status["RssFile"])}), flush=True)


if __name__ == "__main__":
    main()
