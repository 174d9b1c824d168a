#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a circle.

For every crate of the workspace (a directory with Cargo.toml and src/), each `.rs` file under
src/ is a module; a module depends on another when its code (comments and its `#[cfg(test)]
mod tests` left out) names `crate::that::module`. A parent module and its own submodules are
not a circle. Prints each circle found and exits 1; exits 0 when there is none.

    python3 scripts/module_cycles.py [CRATE_DIR...]   # default: every crate of the workspace
"""
import os
import re
import sys


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found["::".join(parts)] = path
    return found


def dependencies(found):
    graph = {}
    for module, path in found.items():
        with open(path, encoding="utf-8") as f:
            text = f.read().split("#[cfg(test)]\nmod tests")[0]
        code = "\n".join(line for line in text.split("\n") if not line.strip().startswith("//"))
        targets = set()
        for named in re.findall(r"crate::([a-z_0-9:]+)", code):
            segments = named.split("::")
            for k in range(len(segments), 0, -1):
                candidate = "::".join(segments[:k])
                if candidate in found:
                    related = candidate == module or candidate.startswith(module + "::") \
                        or module.startswith(candidate + "::")
                    if not related:
                        targets.add(candidate)
                    break
        graph[module] = targets
    return graph


def circles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    crates = sys.argv[1:] or sorted(
        os.path.join(root, d) for d in os.listdir(root)
        if os.path.isfile(os.path.join(root, d, "Cargo.toml")) and os.path.isdir(os.path.join(root, d, "src"))
    )
    failed = False
    for crate in crates:
        for component in circles(dependencies(modules(os.path.join(crate, "src")))):
            print(f"{os.path.basename(os.path.normpath(crate))}: modules import each other in a circle: "
                  f"{', '.join(component)}", file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
