# Sourced by the load scripts: a scratch directory and the processes a run starts, both gone
# when the script exits, and the CPU and memory of a process with its children.

work="$(mktemp -d)"
pids=()
# INT: everyone stops at once (weir's fast shutdown); TERM for what is still there (HAProxy
# in -db mode keeps running on INT, and held the caller's pipe open).
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A process and its children (nginx's worker runs under the master process started here).
family() { echo "$1"; pgrep -P "$1" || true; }
# CPU ticks (user and system) of a process and its children.
ticks() { for p in $(family "$1"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done | awk '{s += $1} END {print s + 0}'; }
# Resident memory in KiB of a process and its children.
rss_kib() { for p in $(family "$1"); do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true; done | awk '{s += $1} END {print s + 0}'; }
