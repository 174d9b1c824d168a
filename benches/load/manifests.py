#!/usr/bin/env python3
"""Writes N Ingresses (one Service and one EndpointSlice each, ENDPOINTS ready endpoints at
127.0.0.1:PORT... spread over loopback addresses) as one manifests file, for the harness's
idle-memory and churn runs.

    manifests.py N PORT OUT.yaml [ENDPOINTS]
"""
import sys


def main():
    n, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    per = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    docs = []
    for i in range(n):
        ns, name, host = f"team-{i % 100}", f"svc-{i}", f"app-{i % 1000}.example.com"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}""")
        endpoints = ", ".join(
            f'{{addresses: ["127.0.{(i * per + e) // 250 % 250}.{(i * per + e) % 250 + 1}"], conditions: {{ready: true}}}}'
            for e in range(per))
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{endpoints}]""")
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
