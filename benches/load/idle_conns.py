#!/usr/bin/env python3
"""Memory of idle client connections: opens N connections of one protocol to a running proxy,
has one request answered on each (an idle keep-alive connection has served something),
holds them all open for SETTLE seconds (default 20) and prints the serving processes' RSS
growth per connection.

    python3 benches/load/idle_conns.py PROTO PORT N PID[,PID...]

PROTO: h1 (plaintext HTTP/1.1), h2c (the preface, SETTINGS and its acknowledgement, one GET),
tls-h1 (TLS, ALPN http/1.1), tls-h2 (TLS, ALPN h2, as h2c). PIDs: the processes whose RSS
is summed (nginx's worker, HAProxy, weir). Prints one line:
    RESULT proto=h1 conns=N before_kib=... after_kib=... per_conn_kib=...
Every read waits at most 10 s; a connection that fails ends the run with an error.
"""
import os
import socket
import ssl
import struct
import sys
import time

proto, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pids = [int(p) for p in sys.argv[4].split(",")]
SETTLE = float(os.environ.get("SETTLE", "20"))
HOST = "bench.example"


def rss_kib():
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            total += int(next(l for l in status if l.startswith("VmRSS")).split()[1])
    return total


def connect():
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if not proto.startswith("tls-"):
        return sock
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2" if proto == "tls-h2" else "http/1.1"])
    tls = context.wrap_socket(sock, server_hostname=HOST)
    if tls.selected_alpn_protocol() != ("h2" if proto == "tls-h2" else "http/1.1"):
        sys.exit(f"ALPN: the server chose {tls.selected_alpn_protocol()!r}")
    return tls


def recv_some(sock):
    data = sock.recv(65536)
    if not data:
        sys.exit("the server closed a connection before answering")
    return data


def http1(sock):
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv_some(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n")
                   if l.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += recv_some(sock)
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"answer: {head[:40]!r}")


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def http2(sock, scheme_index):
    # :method GET, :scheme, :path / from the static table; :authority a literal that the
    # client's encoder also indexes (a used connection's dynamic table holds something).
    block = bytes([0x82, scheme_index, 0x84, 0x41, len(HOST)]) + HOST.encode()
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    buf, answered, settings_seen = b"", False, False
    while not (answered and settings_seen):
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            buf += recv_some(sock)
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
        buf = buf[9 + length:]
        if kind == 4 and not flags & 1:
            sock.sendall(frame(4, 1, 0))
            settings_seen = True
        elif kind == 7:
            sys.exit("the server sent GOAWAY")
        elif kind in (0, 1) and stream == 1 and flags & 1:
            answered = True


time.sleep(0.5)
before = rss_kib()
conns = []
started = time.monotonic()
for _ in range(n):
    sock = connect()
    if proto in ("h1", "tls-h1"):
        http1(sock)
    else:
        http2(sock, 0x87 if proto == "tls-h2" else 0x86)
    conns.append(sock)
    if time.monotonic() - started > 300:
        sys.exit(f"opening {n} connections took over 300 s")
# Measured once the connections have been idle a while, as an ingress's idle keep-alive
# connections are: what a proxy frees when a connection goes idle shows in RSS when its
# allocator gives the pages back (weir's jemalloc: within about 17 s, on its 10 s decay).
time.sleep(SETTLE)
after = rss_kib()
print(f"RESULT proto={proto} conns={n} before_kib={before} after_kib={after} "
      f"per_conn_kib={(after - before) / n:.2f}")
for sock in conns:
    sock.close()
