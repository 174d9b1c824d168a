#!/usr/bin/env python3
"""Turns benches/load/run.sh's raw results into the Markdown table docs/benchmarks.md records.

Input rows: name, round, CPU clock ticks of the proxy process during the run, RSS (KiB) after
it, and wrk's output (lines joined by '|'). Per target: the median over rounds of req/s and of
p50/p99 latency, CPU seconds per 10,000 requests, the largest RSS; then ratios to nginx and to
the bare Pingora proxy.
"""
import re
import statistics
import sys


def seconds(value):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def main():
    path, clk_tck, connections, duration, rounds = sys.argv[1:6]
    clk_tck = float(clk_tck)
    rows = {}
    order = []
    for line in open(path):
        name, _round, ticks, rss, out = line.rstrip("\n").split("\t")
        text = out.replace("|", "\n")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        total = int(re.search(r"(\d+) requests in", text).group(1))
        p50 = seconds(re.search(r"\s50%\s+(\S+)", text).group(1))
        p99 = seconds(re.search(r"\s99%\s+(\S+)", text).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        socket_errors = re.search(r"Socket errors: (.*)", text)
        if name not in rows:
            rows[name] = []
            order.append(name)
        rows[name].append({
            "rps": rps,
            "p50": p50,
            "p99": p99,
            "cpu10k": float(ticks) / clk_tck / total * 10_000,
            "rss": int(rss) / 1024,
            "errors": (int(errors.group(1)) if errors else 0),
            "socket_errors": socket_errors.group(1) if socket_errors else "",
        })
    med = {n: {k: statistics.median(r[k] for r in rows[n]) for k in ("rps", "p50", "p99", "cpu10k")}
           for n in order}
    for n in order:
        med[n]["rss"] = max(r["rss"] for r in rows[n])
        med[n]["errors"] = sum(r["errors"] for r in rows[n])
    print(f"wrk -t1 -c{connections} -d{duration}s, {rounds} interleaved rounds, medians; "
          "one worker per proxy, upstream keep-alive; CPU and RSS of the proxy process.\n")
    print("| target | req/s | p50 | p99 | CPU s / 10k req | RSS | non-2xx | vs nginx | vs bare Pingora |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in order:
        m = med[n]
        vs = lambda other: f"{m['rps'] / med[other]['rps']:.2f}x" if other in med and n != "direct" else ""
        print(f"| {n} | {m['rps']:,.0f} | {m['p50'] * 1e3:.2f} ms | {m['p99'] * 1e3:.2f} ms | "
              f"{m['cpu10k']:.3f} | {m['rss']:.1f} MiB | {m['errors']} | {vs('nginx')} | {vs('bare-pingora')} |")
    socket = [f"{n}: {r['socket_errors']}" for n in order for r in rows[n] if r["socket_errors"]]
    if socket:
        print("\nSocket errors: " + "; ".join(socket))


if __name__ == "__main__":
    main()
