#!/usr/bin/env bash
# Prepares docker/compose.yaml: a host key for the SFTP server (so ftpbridge
# can pin it), random passwords, the WebDAV htpasswd, and docker/.env.
# Run once from anywhere; existing files are kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mkdir -p secrets
if [[ ! -f secrets/ssh_host_ed25519_key ]]; then
    ssh-keygen -q -t ed25519 -N "" -C sftp-host -f secrets/ssh_host_ed25519_key
fi
fingerprint=$(ssh-keygen -lf secrets/ssh_host_ed25519_key.pub | awk '{print $2}')
password() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
if [[ ! -f .env ]]; then
    cat >.env <<ENV
SFTP_HOST_KEY=$fingerprint
SCANNER_PASSWORD=$(password)
SVC_FTP_PASSWORD=$(password)
CAROL_PASSWORD=$(password)
GRAFANA_PASSWORD=$(password)
# The address FTP clients reach this host on (announced in PASV replies).
PASSIVE_ADDRESS=127.0.0.1
ENV
fi
if [[ ! -f secrets/htpasswd ]]; then
    carol_password=$(sed -n 's/^CAROL_PASSWORD=//p' .env)
    printf 'carol:%s\n' "$(openssl passwd -6 "$carol_password")" >secrets/htpasswd
fi
echo "docker/.env written. FTP users: 'scanner' (SFTP, SCANNER_PASSWORD), 'carol' (WebDAV,"
echo "CAROL_PASSWORD), 'alice' (password 'change-me' in proxy.toml, via the svc-ftp account)."
