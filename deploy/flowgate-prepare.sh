#!/usr/bin/env bash
# Prepares an EC2 instance for flowgate (run by flowgate-prepare.service, as root, once per
# boot). Idempotent. Environment (from /etc/flowgate/prepare.env):
#   DATA_PCI   PCI address(es) of the data ENI(s), e.g. "0000:00:06.0"
#   HUGEPAGES  2 MiB pages to reserve if fewer are reserved (default 1024)
#   DRIVER     vfio-pci (default) or igb_uio
set -euo pipefail

DATA_PCI=${DATA_PCI:?set DATA_PCI in /etc/flowgate/prepare.env}
HUGEPAGES=${HUGEPAGES:-1024}
DRIVER=${DRIVER:-vfio-pci}
log() { echo "flowgate-prepare: $*"; }

# 1. Hugepages. Best reserved on the kernel command line (hugepages=1024), where memory is
#    not yet fragmented; this is the fallback for instances booted without it.
nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ "$(cat "$nr")" -lt "$HUGEPAGES" ]; then
    echo "$HUGEPAGES" >"$nr"
    got=$(cat "$nr")
    log "reserved $got x 2 MiB hugepages (asked $HUGEPAGES)"
    [ "$got" -ge "$HUGEPAGES" ] || log "WARNING: only $got hugepages: add hugepages=$HUGEPAGES to the kernel command line"
fi
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages

# 2. The kernel module.
case "$DRIVER" in
vfio-pci)
    modprobe vfio-pci
    # Nitro instances (other than *.metal) give the guest no IOMMU: vfio only works in
    # no-IOMMU mode (the kernel taints itself; DPDK then uses physical addresses).
    if [ -z "$(ls -A /sys/class/iommu 2>/dev/null)" ]; then
        echo 1 >/sys/module/vfio/parameters/enable_unsafe_noiommu_mode
        log "vfio: no IOMMU, enable_unsafe_noiommu_mode=1"
    fi
    ;;
igb_uio)
    # From dpdk-kmods; wc_activate=1 maps ENA's LLQ BAR write-combined.
    modprobe uio
    modprobe igb_uio wc_activate=1
    ;;
*)
    log "unknown DRIVER=$DRIVER (vfio-pci or igb_uio)"
    exit 1
    ;;
esac

# 3. Take each data ENI from the kernel and bind it.
for pci in $DATA_PCI; do
    dev=/sys/bus/pci/devices/$pci
    [ -e "$dev" ] || { log "no PCI device $pci (dpdk-devbind.py --status)"; exit 1; }
    cur=$(basename "$(readlink -f "$dev/driver" 2>/dev/null || echo none)")
    if [ "$cur" = "$DRIVER" ]; then
        log "$pci already bound to $DRIVER"
        continue
    fi
    for ifc in "$dev"/net/*; do
        [ -e "$ifc" ] && ip link set "$(basename "$ifc")" down
    done
    dpdk-devbind.py --force -b "$DRIVER" "$pci"
    log "$pci: $cur -> $DRIVER"
done

# 4. ENA LLQ needs the device's memory BAR mapped write-combining; the stock vfio-pci
#    module does not, which costs tx performance. Say so where the operator will look.
if [ "$DRIVER" = vfio-pci ]; then
    log "note: stock vfio-pci maps ENA's LLQ BAR uncached; see docs/ec2.md 'ENA LLQ and write-combining'"
fi
