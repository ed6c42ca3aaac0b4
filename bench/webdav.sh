#!/usr/bin/env bash
# Throughput of a large RETR and STOR through ftpbridge in front of a WebDAV
# server (nginx, TLS, HTTP/2 offered), side by side with curl GET/PUT
# straight to the same nginx, in one run.
#
#   bench/webdav.sh                # 1 GiB, 3 alternating rounds
#   SIZE_MIB=256 ROUNDS=5 bench/webdav.sh
#
# Loopback, files on tmpfs (/dev/shm): the figures measure CPU cost per byte
# (TLS, HTTP framing, copies), not disks. Needs nginx,
# libnginx-mod-http-dav-ext, curl, openssl (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-3}
NGINX=${NGINX:-/usr/sbin/nginx}
DAV_EXT=${DAV_EXT:-/usr/lib/nginx/modules/ngx_http_dav_ext_module.so}

base=/dev/shm
[[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/ftpbridge-davbench.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

echo "building ftpbridge (release)..." >&2
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/ftpbridge

mkdir -p "$work/www/dav/bench" "$work/local" "$work/tmp" "$work/logs"

# A CA and a server certificate for 127.0.0.1, made for this run only.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$work/ca.key" -out "$work/ca.pem" -subj /CN=ftpbridge-bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/server.key" -out "$work/server.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -out "$work/server.pem" -extfile "$work/server.ext" 2>/dev/null

dav_user=svc
dav_password=bench-pw
echo "$dav_user:{PLAIN}$dav_password" >"$work/htpasswd"
dav_port=$(free_port)
cat >"$work/nginx.conf" <<EOF
load_module $DAV_EXT;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    client_max_body_size 0;
    sendfile on;
    server {
        listen 127.0.0.1:$dav_port ssl http2;
        ssl_certificate $work/server.pem;
        ssl_certificate_key $work/server.key;
        root $work/www;
        location /dav/ {
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            auth_basic bench;
            auth_basic_user_file $work/htpasswd;
        }
    }
}
EOF
"$NGINX" -e "$work/logs/error.log" -c "$work/nginx.conf" &
pids+=($!)
wait_port "$dav_port"

ftp_port=$(free_port)
hash=$(printf 'bench\n' | "$bin" hash-password)
cat >"$work/proxy.toml" <<EOF
[[listeners]]
name = "bench"
bind = "127.0.0.1:$ftp_port"

[[upstreams]]
name = "dav"
kind = "webdav"
url = "https://127.0.0.1:$dav_port/dav/{user}/"
auth = "basic"
username = "$dav_user"
password = "$dav_password"
ca_file = "$work/ca.pem"

[[users]]
name = "bench"
password_hash = "$hash"
upstream = "dav"
EOF
RUST_LOG=warn "$bin" run --config "$work/proxy.toml" 2>"$work/proxy.log" &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$ftp_port"

echo "creating a $SIZE_MIB MiB file..." >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/local/source.bin"
cp "$work/local/source.bin" "$work/www/dav/bench/source.bin"
bytes=$((SIZE_MIB * 1024 * 1024))

dav_url="https://127.0.0.1:$dav_port/dav/bench"
dav_curl=(curl -sS --fail --cacert "$work/ca.pem" -u "$dav_user:$dav_password")
ftp_url="ftp://bench:bench@127.0.0.1:$ftp_port"

timed() { # prints seconds
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

declare -A results peak_rss
run_case() { # name, command...
    local name=$1
    shift
    rm -f "$work/local/out.bin" "$work/www/dav/bench/upload.bin"
    # Reset the proxy's peak RSS (VmHWM) so each transfer reports its own.
    echo 5 >"/proc/$proxy_pid/clear_refs"
    local seconds
    seconds=$(timed "$@")
    results[$name]+="$seconds "
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$proxy_pid/status")
    ((hwm > ${peak_rss[$name]:-0})) && peak_rss[$name]=$hwm
    return 0
}

check_same() {
    cmp -s "$1" "$2" || { echo "MISMATCH: $1 vs $2" >&2; exit 1; }
}

idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$proxy_pid/status")
cases=("curl GET (HTTP/2)" "curl GET (HTTP/1.1)" "ftpbridge RETR"
    "curl PUT (HTTP/2)" "curl PUT (HTTP/1.1)" "ftpbridge STOR")

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    run_case "curl GET (HTTP/2)" "${dav_curl[@]}" --http2 -o "$work/local/out.bin" "$dav_url/source.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "curl GET (HTTP/1.1)" "${dav_curl[@]}" --http1.1 -o "$work/local/out.bin" "$dav_url/source.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "ftpbridge RETR" curl -sS -o "$work/local/out.bin" "$ftp_url/source.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "curl PUT (HTTP/2)" "${dav_curl[@]}" --http2 -T "$work/local/source.bin" "$dav_url/upload.bin"
    check_same "$work/www/dav/bench/upload.bin" "$work/local/source.bin"
    run_case "curl PUT (HTTP/1.1)" "${dav_curl[@]}" --http1.1 -T "$work/local/source.bin" "$dav_url/upload.bin"
    check_same "$work/www/dav/bench/upload.bin" "$work/local/source.bin"
    run_case "ftpbridge STOR" curl -sS -T "$work/local/source.bin" "$ftp_url/upload.bin"
    check_same "$work/www/dav/bench/upload.bin" "$work/local/source.bin"
done

summarise() { # name -> "median min max MB/s"
    tr ' ' '\n' <<<"${results[$1]}" | grep -v '^$' | sort -g |
        awk -v b="$bytes" '{t[NR]=$1} END {m=t[int((NR+1)/2)]; printf "%8.0f %8.0f %8.0f", b/m/1e6, b/t[NR]/1e6, b/t[1]/1e6}'
}
median() { summarise "$1" | awk '{print $1}'; }

echo
echo "$SIZE_MIB MiB over loopback, nginx TLS, tmpfs, $ROUNDS rounds (MB/s: median, min, max)"
printf '%-24s %8s %8s %8s\n' "path" "median" "min" "max"
for name in "${cases[@]}"; do
    printf '%-24s %s\n' "$name" "$(summarise "$name")"
done
echo
ratio() { echo "scale=2; $(median "$1") / $(median "$2")" | bc -l; }
echo "ratio RETR vs curl GET over HTTP/2 (what the proxy negotiates): $(ratio "ftpbridge RETR" "curl GET (HTTP/2)")"
echo "ratio RETR vs curl GET over HTTP/1.1: $(ratio "ftpbridge RETR" "curl GET (HTTP/1.1)")"
echo "ratio STOR vs curl PUT over HTTP/2: $(ratio "ftpbridge STOR" "curl PUT (HTTP/2)")"
echo "ratio STOR vs curl PUT over HTTP/1.1: $(ratio "ftpbridge STOR" "curl PUT (HTTP/1.1)")"
echo "ftpbridge RSS before the first transfer: $((idle_rss / 1024)) MiB;" \
    "peak during RETR: $((peak_rss["ftpbridge RETR"] / 1024)) MiB, during STOR: $((peak_rss["ftpbridge STOR"] / 1024)) MiB"
