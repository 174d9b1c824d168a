#!/usr/bin/env python3
"""Turns benches/load/run.sh's raw results into the Markdown tables docs/benchmarks.md records
and an SVG plot.

Input rows: name, mode, round, CPU clock ticks of the proxy process during the run, RSS (KiB)
after it, and a RESULT line (requests, seconds, non-2xx, socket errors, p50/p99/p99.9 in µs).
Per mode and target: the median over rounds of req/s and of each percentile, CPU seconds per
10,000 requests, the largest RSS and the summed errors; then ratios to nginx and to the two
bare Pingora proxies and to HAProxy.
"""
import statistics
import sys

MODES = {
    "h1": "HTTP/1.1, wrk -t1 -c{c}, as fast as each proxy goes",
    "h2c": "HTTP/2 prior knowledge to the proxy (h2load -c16 -m4), HTTP/1.1 upstream",
    "rate": "HTTP/1.1 at a fixed {rate} req/s (h2load --h1 -c{c} --rps)",
}


def parse(line):
    name, mode, _round, ticks, rss, result = line.rstrip("\n").split("\t")
    fields = dict(kv.split("=") for kv in result.split()[1:])
    requests, seconds = int(fields["requests"]), float(fields["seconds"])
    return name, mode, {
        "rps": requests / seconds if seconds else 0.0,
        "p50": int(fields["p50"]) / 1000,
        "p99": int(fields["p99"]) / 1000,
        "p999": int(fields["p999"]) / 1000,
        "cpu10k": float(ticks) / CLK_TCK / requests * 10_000 if requests else 0.0,
        "rss": int(rss) / 1024,
        "errors": int(fields["non2xx"]) + int(fields["socket_errors"]),
    }


def svg(med, order, path):
    """Grouped bars: req/s per target for the throughput modes, p99 for the fixed rate."""
    panels = [(m, "req/s", "rps") for m in ("h1", "h2c") if m in med] + \
             [(m, "p99 ms", "p99") for m in ("rate",) if m in med]
    width, bar_h, gap = 760, 18, 40
    y, parts = 20, []
    for mode, unit, key in panels:
        rows = [(n, med[mode][n][key]) for n in order if n in med[mode]]
        top = max(v for _, v in rows) or 1
        parts.append(f'<text x="10" y="{y}" font-weight="bold">{mode}: {unit}</text>')
        y += 10
        for name, value in rows:
            w = int(value / top * (width - 260))
            colour = "#d9534f" if name == "weir" else "#5b8dd6"
            label = f"{value:,.0f}" if key == "rps" else f"{value:.2f}"
            parts.append(f'<text x="10" y="{y + 13}">{name}</text>'
                         f'<rect x="170" y="{y}" width="{w}" height="{bar_h - 4}" fill="{colour}"/>'
                         f'<text x="{175 + w}" y="{y + 13}">{label}</text>')
            y += bar_h
        y += gap
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
                f'font-family="sans-serif" font-size="12">{"".join(parts)}</svg>\n')


def main():
    global CLK_TCK
    path, clk_tck, connections, duration, rounds, rate, plot = sys.argv[1:8]
    CLK_TCK = float(clk_tck)
    rows, order, modes = {}, [], []
    for line in open(path):
        name, mode, r = parse(line)
        rows.setdefault(mode, {}).setdefault(name, []).append(r)
        if name not in order:
            order.append(name)
        if mode not in modes:
            modes.append(mode)
    med = {}
    for mode in modes:
        med[mode] = {}
        for n, rs in rows[mode].items():
            m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "p999", "cpu10k")}
            m["rss"] = max(r["rss"] for r in rs)
            m["errors"] = sum(r["errors"] for r in rs)
            med[mode][n] = m
    print(f"{rounds} interleaved rounds of {duration} s, medians; one worker per proxy, upstream "
          "keep-alive; CPU and RSS of the proxy process; errors = non-2xx + socket errors.")
    for mode in modes:
        print(f"\n**{mode}** — {MODES[mode].format(c=connections, rate=rate)}\n")
        print("| target | req/s | p50 | p99 | p99.9 | CPU s / 10k req | RSS | errors "
              "| vs nginx | vs HAProxy | vs bare Pingora | vs bare Pingora tuned |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in order:
            if n not in med[mode]:
                continue
            m = med[mode][n]
            key = "p99" if mode == "rate" else "rps"

            def vs(other):
                if other not in med[mode] or n == "direct":
                    return ""
                a, b = m[key], med[mode][other][key]
                return f"{a / b:.2f}x" + (" p99" if key == "p99" else "") if b else ""
            print(f"| {n} | {m['rps']:,.0f} | {m['p50']:.2f} ms | {m['p99']:.2f} ms | {m['p999']:.2f} ms | "
                  f"{m['cpu10k']:.3f} | {m['rss']:.1f} MiB | {m['errors']} | {vs('nginx')} | "
                  f"{vs('haproxy')} | {vs('bare-pingora')} | {vs('bare-pingora-tuned')} |")
    svg(med, order, plot)
    print(f"\nPlot: {plot}")


if __name__ == "__main__":
    main()
