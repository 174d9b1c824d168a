#!/usr/bin/env python3
"""Writes N Ingresses (one Service and one EndpointSlice each, ENDPOINTS ready endpoints at
127.0.0.1:PORT... spread over loopback addresses) as one manifests file, for the harness's
idle-memory runs. With N = 0: one Ingress whose default backend is the Service `bench/up` with
ENDPOINTS endpoints at 127.0.0.1:PORT, 127.0.0.2:PORT, ..., for the load harness (every host and
path goes there; churn.py rewrites this file).

    manifests.py N PORT OUT.yaml [ENDPOINTS]

With ROUTE_FILTERS=1 in the environment (N = 0), the one route is a rule instead, matching
every path as an ingress-nginx regex path and carrying five filters: the path rewritten with a
capture (`rewrite-target`), the upstream `Host` set (`upstream-vhost`), a field added
(`x-forwarded-prefix`), the body size limited (`proxy-body-size`) and a response status
replaced by an error backend (`custom-http-errors`, with `default-backend`); what such a
route costs over the plain one. With
ROUTE_FILTERS=regex, the same regex rule without filters (`use-regex`); with
ROUTE_FILTERS=policy, the regex rule with a source range, CORS and a rate limit that never
refuses (what checking them costs); with ROUTE_FILTERS=auth, the regex rule with basic auth
(a bcrypt htpasswd Secret; clients send `Authorization: Basic` for `bench:bench`, which
benches/load/filters.sh does) and a rate limit that never refuses.
"""
import os
import sys


def service(ns, name, port, addresses):
    """A Service and its EndpointSlice: `addresses` ready at `port`."""
    endpoints = ", ".join(f'{{addresses: ["{a}"], conditions: {{ready: true}}}}' for a in addresses)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{endpoints}]"""


def default_backend(port, addresses):
    """The load harness's one route: every request goes to Service bench/up at `addresses`."""
    return service("bench", "up", port, addresses) + """
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: bench}
spec:
  ingressClassName: weir
  defaultBackend: {service: {name: up, port: {name: http}}}"""


FILTERS = """
    nginx.ingress.kubernetes.io/rewrite-target: /$1
    nginx.ingress.kubernetes.io/upstream-vhost: up.bench.svc
    nginx.ingress.kubernetes.io/x-forwarded-prefix: /
    nginx.ingress.kubernetes.io/proxy-body-size: 1m
    nginx.ingress.kubernetes.io/custom-http-errors: '503'
    nginx.ingress.kubernetes.io/default-backend: up"""


REGEX_ONLY = """
    nginx.ingress.kubernetes.io/use-regex: 'true'"""


POLICY = """
    nginx.ingress.kubernetes.io/use-regex: 'true'
    nginx.ingress.kubernetes.io/allowlist-source-range: 127.0.0.0/8
    nginx.ingress.kubernetes.io/enable-cors: 'true'
    nginx.ingress.kubernetes.io/limit-rps: '100000000'"""


AUTH = """
    nginx.ingress.kubernetes.io/use-regex: 'true'
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: users
    nginx.ingress.kubernetes.io/limit-rps: '100000000'"""

# `htpasswd -nbB bench bench` (bcrypt, cost 5).
USERS = """apiVersion: v1
kind: Secret
metadata: {name: users, namespace: bench}
type: Opaque
stringData:
  auth: "bench:$2y$05$QJPKAuJJbQ3PcIbZdJ/ZFeQG18RA3vDowTiZuQcKvxwRJ8pBMWIDi"
---
"""


def filtered_route(port, addresses, annotations):
    """The load harness's one route as a regex rule for every path, with `annotations`."""
    return service("bench", "up", port, addresses) + f"""
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
  annotations:{annotations}
spec:
  ingressClassName: weir
  rules:
  - http: {{paths: [{{path: "/(.*)", pathType: ImplementationSpecific, backend: {{service: {{name: up, port: {{name: http}}}}}}}}]}}"""


def main():
    n, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    per = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    docs = []
    if n == 0:
        addresses = [f"127.0.0.{e + 1}" for e in range(per)]
        mode = os.environ.get("ROUTE_FILTERS")
        chosen = {"1": FILTERS, "regex": REGEX_ONLY, "policy": POLICY, "auth": AUTH}.get(mode)
        if mode == "auth":
            docs.append(USERS)
        if chosen:
            docs.append(filtered_route(port, addresses, chosen))
        else:
            docs.append(default_backend(port, addresses))
    for i in range(n):
        ns, name, host = f"team-{i % 100}", f"svc-{i}", f"app-{i % 1000}.example.com"
        addresses = [f"127.0.{(i * per + e) // 250 % 250}.{(i * per + e) % 250 + 1}" for e in range(per)]
        docs.append(service(ns, name, port, addresses))
        docs.append(f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ingressClassName: weir
  rules:
  - host: {host}
    http: {{paths: [{{path: /{name}, pathType: Prefix, backend: {{service: {{name: {name}, port: {{name: http}}}}}}}}]}}""")
    with open(out, "w") as f:
        f.write("\n---\n".join(docs) + "\n")


if __name__ == "__main__":
    main()
