#!/usr/bin/env bash
# The NAT lab's counts (issue 5): transfers tried / succeeded per data-source
# policy and SNAT mode, ftpbridge next to vsftpd (Debian package, default
# config and pasv_promiscuous=YES) in the same network namespaces.
#
# It runs tests/nat_lab.rs (network namespaces, an iptables SNAT router that
# sends each new connection out through one of two addresses, curl as the
# client) with more transfers per cell than the test suite does, and prints
# the report the lab writes (target/tmp/nat-lab-report.md).
#
# Run as root on Debian (scripts/test.sh installs iproute2, iptables, vsftpd,
# curl, openssh-server):
#   bench/nat-lab.sh                 # 10 rounds: 30 transfers per cell
#   NAT_LAB_ROUNDS=30 bench/nat-lab.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "nat-lab.sh: network namespaces need root" >&2
    exit 1
fi
export NAT_LAB_ROUNDS="${NAT_LAB_ROUNDS:-10}"
report=target/tmp/nat-lab-report.md
rm -f "$report"
# One test at a time: the timings in the report are then not the machine's load.
cargo test --test nat_lab -- --test-threads=1
cat "$report"
