#!/usr/bin/env python3
"""Memory of idle HTTP/2 connections: opens N h2c connections to a running proxy, sends each
the preface, empty SETTINGS and one GET, reads the answers, then holds them and prints the
proxy's RSS growth per connection.

    python3 benches/load/idle_h2.py PORT PROXY_PID N
"""
import socket
import sys
import time

port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        return int(next(l for l in status if l.startswith("VmRSS")).split()[1])


before = rss_kib()
hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
get = b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x86\x84"  # GET http /, static indexes
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello + get)
    conns.append(s)
time.sleep(3)
for s in conns:
    s.setblocking(False)
    try:
        s.recv(65536)
    except OSError:
        pass
time.sleep(2)
after = rss_kib()
print(f"{n} idle h2c connections: RSS {before} -> {after} KiB, {(after - before) / n:.1f} KiB each")
