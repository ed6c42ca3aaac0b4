#!/usr/bin/env bash
# The one command for the whole test suite: scripts/test.sh [cargo test args...]
# As root it installs what the integration tests need (OpenSSH server/client, lftp, nginx with
# the dav-ext module and Apache httpd as WebDAV upstreams, systemd-analyze for the unit file, ...),
# creates the password test user and sshd's privilege separation dir; then runs cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(openssh-server openssh-client curl lftp ncftp python3 ca-certificates openssl
          nginx libnginx-mod-http-dav-ext apache2 systemd iproute2 iptables haproxy vsftpd)
TEST_USER=ftpbridge-test          # same as tests/common/sshd.rs
TEST_PASSWORD=ftpbridge-test-pw

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == *"ok installed" ]]; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [[ $(id -u) -eq 0 ]]; then
    if ((${#missing[@]})); then
        echo "test.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if ! getent passwd "$TEST_USER" >/dev/null; then
        # sshd runs the sftp subsystem through the user's shell: it must be a real one.
        useradd -m -s /bin/sh "$TEST_USER"
        echo "$TEST_USER:$TEST_PASSWORD" | chpasswd
    fi
    mkdir -p -m 0755 /run/sshd
else
    if ((${#missing[@]})); then
        echo "test.sh: not root; missing packages: ${missing[*]}" >&2
    fi
    getent passwd "$TEST_USER" >/dev/null ||
        echo "test.sh: not root; password test user $TEST_USER missing (tests that need it will fail)" >&2
    [[ -d /run/sshd ]] || echo "test.sh: not root; /run/sshd missing (sshd tests will fail)" >&2
fi

exec cargo test --all-targets "$@"
