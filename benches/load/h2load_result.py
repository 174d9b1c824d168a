#!/usr/bin/env python3
"""Turns an h2load run (its stdout on stdin, its --log-file as argv[1]) into the RESULT line
latency.lua prints for wrk: requests, seconds, non-2xx, errors and p50/p99/p99.9 in µs."""
import re
import sys

text = sys.stdin.read()
durations = []
non2xx = 0
for line in open(sys.argv[1]):
    parts = line.split("\t")
    if len(parts) >= 3:
        status, duration = int(parts[1]), int(parts[2])
        durations.append(duration)
        non2xx += not (200 <= status < 400)
durations.sort()
done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
seconds = re.search(r"finished in ([\d.]+)(ms|s)", text)
secs = float(seconds.group(1)) / (1000 if seconds.group(2) == "ms" else 1) if seconds else 0.0


def pct(p):
    return durations[min(len(durations) - 1, int(len(durations) * p / 100))] if durations else 0


errors = int(done.group(3)) + int(done.group(4)) if done else 0
print(f"RESULT requests={len(durations)} seconds={secs:.3f} non2xx={non2xx} socket_errors={errors} "
      f"p50={pct(50)} p99={pct(99)} p999={pct(99.9)}")
