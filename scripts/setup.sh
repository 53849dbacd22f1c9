#!/usr/bin/env bash
# Prepares a Debian 12 machine to build and test flowgate. Idempotent; run as root.
#
#   - installs DPDK 22.11 and the build/test tools (only what is missing; apt-get update
#     only when something is missing),
#   - reserves 1024 x 2 MiB hugepages and mounts hugetlbfs on /dev/hugepages if absent
#     (the tests themselves run with --no-huge; production and benches use hugepages),
#   - checks that cargo is there (the Rust toolchain is not installed by this script).
#
# Not root: nothing is installed; the script says what is missing and exits 0 (the
# namespace tests then print SKIP lines).
set -euo pipefail

PACKAGES=(
    dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config build-essential
    iproute2 iputils-ping ethtool python3 python3-scapy prometheus
    netcat-openbsd curl iperf3 tcpdump traceroute kmod procps systemd
    etcd-server etcd-client protobuf-compiler
    valgrind
)
HUGEPAGES=1024

log() { echo "setup: $*"; }

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "$(id -u)" -ne 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        log "not root: cannot install missing packages: ${missing[*]}"
    fi
    log "not root: skipping package install and hugepage setup (namespace tests will SKIP)"
    command -v cargo >/dev/null 2>&1 || log "cargo not found on PATH: install a Rust toolchain (rustup)"
    exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Don't let package scripts start daemons (prometheus) during the install. A
    # policy-rc.d that is already there is left alone.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    cleanup_policy() { if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
    trap cleanup_policy EXIT
    timeout 600 apt-get update -q
    # --no-install-recommends: prometheus recommends prometheus-node-exporter, a daemon on
    # port 9100 (flowgate's default metrics port).
    timeout 1200 apt-get install -y -q --no-install-recommends "${missing[@]}"
    cleanup_policy
    trap - EXIT
else
    log "all packages present"
fi

for tool in dpdk-testpmd ip ss ping ethtool sysctl tcpdump promtool curl nc traceroute iperf3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || { log "ERROR: $tool missing after install"; exit 1; }
done
if ! /usr/bin/python3 -c 'import scapy.all' >/dev/null 2>&1; then
    log "ERROR: /usr/bin/python3 cannot import scapy"
    exit 1
fi
pkg-config --modversion libdpdk | grep -q '^22\.11' || {
    log "ERROR: pkg-config finds DPDK $(pkg-config --modversion libdpdk 2>/dev/null || echo none), need 22.11"
    exit 1
}

# The tun driver for the net_tap tests.
if [ ! -e /dev/net/tun ]; then
    modprobe tun 2>/dev/null || log "warning: /dev/net/tun missing and 'modprobe tun' failed"
fi

# Hugepages (best effort: a container may not allow it; the tests use --no-huge).
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$hp" ]; then
    cur=$(cat "$hp")
    if [ "$cur" -lt "$HUGEPAGES" ]; then
        echo "$HUGEPAGES" > "$hp" 2>/dev/null || true
        log "hugepages: $(cat "$hp") x 2 MiB reserved (wanted $HUGEPAGES)"
    else
        log "hugepages: $cur x 2 MiB already reserved"
    fi
else
    log "warning: cannot reserve hugepages ($hp not writable)"
fi
if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages 2>/dev/null \
        && log "mounted hugetlbfs on /dev/hugepages" \
        || log "warning: could not mount hugetlbfs on /dev/hugepages"
fi

if command -v cargo >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo" ]; then
    log "cargo: $(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
else
    log "ERROR: cargo not found: install a Rust toolchain (rustup) first"
    exit 1
fi
log "ok"
