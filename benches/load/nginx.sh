# Sourced by the load scripts: nginx configurations in a scratch directory.

# nginx_conf DIR NAME SERVER_BLOCKS: writes DIR/NAME/nginx.conf, one foreground worker with no
# access log around the given http-level blocks, and prints its path. NGINX_WORKER_CONNECTIONS
# sets worker_connections (default 4096).
nginx_conf() {
    mkdir -p "$1/$2"
    cat > "$1/$2/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $1/$2/nginx.pid;
error_log $1/$2/error.log warn;
events { worker_connections ${NGINX_WORKER_CONNECTIONS:-4096}; }
http {
    access_log off;
    client_body_temp_path $1/$2; proxy_temp_path $1/$2; fastcgi_temp_path $1/$2;
    uwsgi_temp_path $1/$2; scgi_temp_path $1/$2;
    $3
}
CONF
    echo "$1/$2/nginx.conf"
}

# The fixed fast upstream every load script uses: "ok\n" from each of LISTEN addresses.
#   nginx_upstream_conf DIR LISTEN...
nginx_upstream_conf() {
    local dir="$1" listens=""
    shift
    for address in "$@"; do listens+="listen $address backlog=4096; "; done
    nginx_conf "$dir" upstream "server { $listens keepalive_requests 1000000; location / { return 200 \"ok\n\"; } }"
}
