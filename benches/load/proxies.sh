# Sourced by the load scripts that compare weir with nginx and HAProxy: starts the three
# proxies as an ingress runs them, in front of one nginx upstream ("ok\n"), and waits until
# each answers. Needs WEIR_BIN (and BASELINE_BIN, WEIR_FLAGS, MAX_CONNS if set) and
# procs.sh's scratch directory; sets the ports below and nginx_pid, haproxy_pid, weir_pid,
# base_pid.
#   weir     as shipped: default flags, --threads 1, its access log on (JSON, to stdout)
#   nginx    one worker, a JSON access_log of the same fields, ingress-nginx's TLS settings
#   haproxy  one thread, `option httplog` logged to stdout
# Every log goes to /dev/null; all three serve the same ECDSA P-256 certificate.
# MAX_CONNS: nginx's worker_connections and HAProxy's maxconn (weir keeps its default,
# --max-connections 10000, unless WEIR_FLAGS says otherwise); HAPROXY_MAXCONN overrides it
# for HAProxy, which needs two descriptors per connection it allows.
MAX_CONNS="${MAX_CONNS:-4000}"
NGINX_WORKER_CONNECTIONS="$MAX_CONNS"
UP=19100; NGINX=19101; NGINX_H2C=19102; NGINX_TLS=19103
HAPROXY=19111; HAPROXY_H2C=19112; HAPROXY_TLS=19113
WEIR=19121; WEIR_TLS=19123; ADMIN=19125
BASE=19131; BASE_TLS=19133; BASE_ADMIN=19135

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=bench.example -addext subjectAltName=DNS:bench.example \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"

nginx_upstream_conf "$work" "127.0.0.1:$UP" >/dev/null
# ingress-nginx's defaults for the parts that cost: a JSON access log (its log-format-upstream
# fields), TLS 1.2 and 1.3, a shared session cache, upstream keep-alive.
nginx_conf "$work" proxy "
    log_format weir_json escape=json '{\"time\":\"\$time_iso8601\",\"method\":\"\$request_method\",'
        '\"host\":\"\$host\",\"path\":\"\$uri\",\"status\":\$status,\"duration\":\$request_time,'
        '\"upstream\":\"\$upstream_addr\",\"upstream_status\":\"\$upstream_status\",'
        '\"bytes_in\":\$request_length,\"bytes_out\":\$bytes_sent,\"request_id\":\"\$request_id\"}';
    access_log /dev/null weir_json;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;
    upstream u { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$NGINX backlog=4096; listen 127.0.0.1:$NGINX_TLS ssl http2 backlog=4096;
        keepalive_requests 1000000;
        location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
    server { listen 127.0.0.1:$NGINX_H2C http2 backlog=4096; keepalive_requests 1000000;
        location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" >/dev/null
sed -i 's/^    access_log off;$//' "$work/proxy/nginx.conf"
cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn ${HAPROXY_MAXCONN:-$MAX_CONNS}
    log stdout format raw local0
    tune.ssl.default-dh-param 2048
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend f
    bind 127.0.0.1:$HAPROXY
    bind 127.0.0.1:$HAPROXY_TLS ssl crt $work/haproxy.pem alpn h2,http/1.1
    default_backend b
frontend f2
    bind 127.0.0.1:$HAPROXY_H2C proto h2
    default_backend b
backend b
    server s 127.0.0.1:$UP
CONF
mkdir -p "$work/manifests"
python3 benches/load/manifests.py 0 "$UP" "$work/manifests/bench.yaml"
b64() { base64 -w0 "$1"; }
cat >>"$work/manifests/bench.yaml" <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: bench}
type: kubernetes.io/tls
data: {tls.crt: $(b64 "$work/cert.pem"), tls.key: $(b64 "$work/key.pem")}
YAML

nginx -c "$work/upstream/nginx.conf" & pids+=($!)
nginx -c "$work/proxy/nginx.conf" & pids+=($!); nginx_pid=$!
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!); haproxy_pid=$!
# shellcheck disable=SC2086
"$WEIR_BIN" --manifests "$work/manifests" --http-listen "127.0.0.1:$WEIR" \
    --https-listen "127.0.0.1:$WEIR_TLS" --default-certificate bench/tls \
    --admin-listen "127.0.0.1:$ADMIN" --threads 1 --log-format json $WEIR_FLAGS \
    >/dev/null 2>"$work/weir.err" & pids+=($!); weir_pid=$!
base_pid=0
if [ -n "$BASELINE_BIN" ]; then
    # shellcheck disable=SC2086
    "$BASELINE_BIN" --manifests "$work/manifests" --http-listen "127.0.0.1:$BASE" \
        --https-listen "127.0.0.1:$BASE_TLS" --default-certificate bench/tls \
        --admin-listen "127.0.0.1:$BASE_ADMIN" --threads 1 --log-format json $WEIR_FLAGS \
        >/dev/null 2>"$work/base.err" & pids+=($!); base_pid=$!
    for _ in $(seq 100); do curl -kfs -o /dev/null "https://127.0.0.1:$BASE_TLS/" && break; sleep 0.1; done
fi
for url in "http://127.0.0.1:$UP/" "http://127.0.0.1:$NGINX/" "https://127.0.0.1:$NGINX_TLS/" \
    "http://127.0.0.1:$HAPROXY/" "https://127.0.0.1:$HAPROXY_TLS/" "http://127.0.0.1:$WEIR/" \
    "https://127.0.0.1:$WEIR_TLS/"; do
    for _ in $(seq 100); do curl -kfs -o /dev/null "$url" && break; sleep 0.1; done
    curl -kfs -o /dev/null "$url" || { echo "$url does not answer" >&2; cat "$work/weir.err" >&2; exit 1; }
done

