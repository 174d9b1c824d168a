#!/usr/bin/env python3
"""Endpoint churn for benches/load/churn.sh: rewrites the harness's default-backend manifest
RATE times a second for SECONDS, each time with one of ENDPOINTS endpoints left out (a
different one each time, as pods of a rolling deploy come and go). Each write is a new file
renamed over the old one, as `kubectl`-style tools and ConfigMap mounts do, so weir never
reads half a file. Prints how many changes it made.

    churn.py FILE PORT ENDPOINTS RATE SECONDS
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from manifests import default_backend  # noqa: E402


def main():
    path, port, endpoints = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate, seconds = float(sys.argv[4]), float(sys.argv[5])
    addresses = [f"127.0.0.{e + 1}" for e in range(endpoints)]
    start = time.monotonic()
    changes = 0
    while time.monotonic() - start < seconds:
        missing = changes % endpoints
        text = default_backend(port, addresses[:missing] + addresses[missing + 1:]) + "\n"
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        changes += 1
        # A fixed schedule, not a fixed sleep: the rate holds however long a write takes.
        delay = start + changes / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(changes)


if __name__ == "__main__":
    main()
