#!/usr/bin/env bash
# Throughput of a large RETR and STOR through ftpbridge, side by side with
# OpenSSH's own `sftp` client against the same sshd, in one run.
#
#   bench/throughput.sh            # 1 GiB, 3 alternating rounds
#   SIZE_MIB=256 ROUNDS=5 bench/throughput.sh
#
# Everything runs on loopback with files on tmpfs (/dev/shm), so the figures
# measure CPU cost per byte (SSH crypto, copies, syscalls), not disks.
# Needs: openssh-server, openssh-client, curl (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-3}
SSHD=${SSHD:-/usr/sbin/sshd}
SFTP_SERVER=${SFTP_SERVER:-/usr/lib/openssh/sftp-server}

base=/dev/shm
[[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/ftpbridge-bench.XXXXXX")
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

mkdir -p "$work/data" "$work/local" /run/sshd
chmod 0755 "$work"
ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
user=$(id -un)
sshd_port=$(free_port)
cat >"$work/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $sshd_port
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin yes
Subsystem sftp $SFTP_SERVER
EOF
"$SSHD" -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)
wait_port "$sshd_port"
fingerprint=$(ssh-keygen -lf "$work/host_key.pub" | awk '{print $2}')

ftp_port=$(free_port)
ftps_port=$(free_port)
hash=$(printf 'bench\n' | target/release/ftpbridge hash-password)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
cat >"$work/proxy.toml" <<EOF
[[listeners]]
name = "bench"
bind = "127.0.0.1:$ftp_port"

[[listeners]]
name = "bench-ftps"
bind = "127.0.0.1:$ftps_port"
tls = "explicit"
tls_cert = "$work/tls.pem"
tls_key = "$work/tls.key"
require_tls = "all"

[[upstreams]]
name = "sftp"
kind = "sftp"
address = "127.0.0.1:$sshd_port"
host_key = "$fingerprint"
auth = "key"
username = "$user"
key = "$work/client_key"
root = "$work/data"

[[users]]
name = "bench"
password_hash = "$hash"
upstream = "sftp"
EOF
RUST_LOG=warn,ftpbridge::upstream::sftp::connect=debug target/release/ftpbridge run --config "$work/proxy.toml" 2>"$work/proxy.log" &
proxy_pid=$!
pids+=("$proxy_pid")
wait_port "$ftp_port"

echo "creating a $SIZE_MIB MiB file..." >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/local/source.bin"
cp "$work/local/source.bin" "$work/data/source.bin"
bytes=$((SIZE_MIB * 1024 * 1024))

sftp_cmd() { # cipher, batch command
    local cipher=$1
    shift
    local opts=(-q -i "$work/client_key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -P "$sshd_port")
    [[ $cipher != default ]] && opts+=(-c "$cipher")
    echo "$*" | sftp "${opts[@]}" -b - "$user@127.0.0.1" >/dev/null
}

timed() { # prints seconds
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

ftp_url="ftp://bench:bench@127.0.0.1:$ftp_port"
ftps=(--ssl-reqd --cacert "$work/tls.pem" --resolve "localhost:$ftps_port:127.0.0.1")
ftps_url="ftp://bench:bench@localhost:$ftps_port"
declare -A results peak_rss
run_case() { # name, command...
    local name=$1
    shift
    rm -f "$work/local/out.bin" "$work/data/upload.bin"
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

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    run_case "sftp get (chacha20-poly1305)" sftp_cmd default "get $work/data/source.bin $work/local/out.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "sftp get (aes128-gcm)" sftp_cmd aes128-gcm@openssh.com "get $work/data/source.bin $work/local/out.bin"
    run_case "ftpbridge RETR" curl -sS -o "$work/local/out.bin" "$ftp_url/source.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "sftp put (chacha20-poly1305)" sftp_cmd default "put $work/local/source.bin $work/data/upload.bin"
    check_same "$work/data/upload.bin" "$work/local/source.bin"
    run_case "sftp put (aes128-gcm)" sftp_cmd aes128-gcm@openssh.com "put $work/local/source.bin $work/data/upload.bin"
    run_case "ftpbridge STOR" curl -sS -T "$work/local/source.bin" "$ftp_url/upload.bin"
    check_same "$work/data/upload.bin" "$work/local/source.bin"
    run_case "ftpbridge RETR (FTPS)" curl -sS "${ftps[@]}" -o "$work/local/out.bin" "$ftps_url/source.bin"
    check_same "$work/local/out.bin" "$work/local/source.bin"
    run_case "ftpbridge STOR (FTPS)" curl -sS "${ftps[@]}" -T "$work/local/source.bin" "$ftps_url/upload.bin"
    check_same "$work/data/upload.bin" "$work/local/source.bin"
done

summarise() { # name -> "median min max MB/s"
    tr ' ' '\n' <<<"${results[$1]}" | grep -v '^$' | sort -g |
        awk -v b="$bytes" '{t[NR]=$1} END {m=t[int((NR+1)/2)]; printf "%8.0f %8.0f %8.0f", b/m/1e6, b/t[NR]/1e6, b/t[1]/1e6}'
}
median() { summarise "$1" | awk '{print $1}'; }

echo
echo "$SIZE_MIB MiB over loopback, tmpfs, $ROUNDS rounds (MB/s: median, min, max)"
printf '%-32s %8s %8s %8s\n' "path" "median" "min" "max"
for name in "sftp get (chacha20-poly1305)" "sftp get (aes128-gcm)" "ftpbridge RETR" "ftpbridge RETR (FTPS)" \
    "sftp put (chacha20-poly1305)" "sftp put (aes128-gcm)" "ftpbridge STOR" "ftpbridge STOR (FTPS)"; do
    printf '%-32s %s\n' "$name" "$(summarise "$name")"
done
echo
ratio() { echo "scale=2; $(median "$1") / $(median "$2")" | bc -l; }
echo "ratio RETR vs sftp get with OpenSSH's default cipher (chacha20): $(ratio "ftpbridge RETR" "sftp get (chacha20-poly1305)")"
echo "ratio RETR vs sftp get with the cipher ftpbridge negotiates (aes128-gcm): $(ratio "ftpbridge RETR" "sftp get (aes128-gcm)")"
echo "ratio STOR vs sftp put with OpenSSH's default cipher (chacha20): $(ratio "ftpbridge STOR" "sftp put (chacha20-poly1305)")"
echo "ratio STOR vs sftp put with the cipher ftpbridge negotiates (aes128-gcm): $(ratio "ftpbridge STOR" "sftp put (aes128-gcm)")"
echo "ftpbridge RSS before the first transfer: $((idle_rss / 1024)) MiB;" \
    "peak during RETR: $((peak_rss["ftpbridge RETR"] / 1024)) MiB, during STOR: $((peak_rss["ftpbridge STOR"] / 1024)) MiB"
echo "FTPS vs plain FTP through ftpbridge: RETR $(ratio "ftpbridge RETR (FTPS)" "ftpbridge RETR"), STOR $(ratio "ftpbridge STOR (FTPS)" "ftpbridge STOR")"
grep -o 'cipher="\?[a-z0-9@.-]*' "$work/proxy.log" | sort -u | sed 's/^/ftpbridge negotiated /' || true
