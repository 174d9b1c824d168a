-- wrk: print requests, errors and latency percentiles (microseconds) on one line for report.py.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT requests=%d seconds=%.3f non2xx=%d socket_errors=%d p50=%d p99=%d p999=%d\n",
        summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
