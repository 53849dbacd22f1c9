#!/usr/bin/python3
"""Plot bench/results/latest.txt: docs/bench-mpps.png.

Left: the in-process pipeline benchmark, Mpps on one core (pipeline time only) against
the number of flows, routing and NAT (established flows). Right: the net_memif link
benchmark, median Mpps with min..max bars: 1 queue pair (testpmd macswap, flowgate route,
NAT, LB) and 2 queue pairs (testpmd macswap, flowgate route, NAT, OVS-DPDK conntrack NAT),
all from the same run; the issue-11 ratios in the title.

usage: bench/plot.py [RESULTS] [PNG]   (Debian: apt-get install python3-matplotlib)
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    keys = {}
    in_keys = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line == "## keys":
                in_keys = True
                continue
            if in_keys:
                m = re.match(r"^([a-z0-9_]+): (.*)$", line)
                if m:
                    keys[m.group(1)] = m.group(2)
    return keys


def num(v):
    try:
        return float(v.split()[0])
    except (ValueError, AttributeError, IndexError):
        return None


def count(s):
    mul = {"k": 1e3, "m": 1e6}
    return float(s[:-1]) * mul[s[-1]] if s[-1] in mul else float(s)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.txt"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench-mpps.png"
    k = load(src)

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.4]})
    for mode, style in (("route", "o-"), ("nat", "s-")):
        pts = []
        for key, v in k.items():
            m = re.match(rf"^pipeline_{mode}_([0-9]+[km]?)_mpps$", key)
            if m and num(v) is not None:
                pts.append((count(m.group(1)), num(v)))
        pts.sort()
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], style, label=mode)
            for x, y in pts:
                a.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6),
                           ha="center", fontsize=8)
    a.set_xscale("log")
    a.set_xlabel("flows (NAT: established)")
    a.set_ylabel("Mpps, one core (pipeline only)")
    a.set_title("in-process pipeline (64 B frames)")
    a.set_ylim(bottom=0)
    a.grid(True, which="both", alpha=0.3)
    a.legend()

    names, med, lo, hi, colors = [], [], [], [], []
    for mode, label, color in (
            ("macswap", "testpmd\nmacswap\n1q", "#999999"),
            ("route", "flowgate\nroute\n1q", "#4477aa"),
            ("nat", "flowgate\nNAT\n1q", "#cc6677"),
            ("lb", "flowgate\nLB\n1q", "#228833"),
            ("macswap_2q", "testpmd\nmacswap\n2q", "#bbbbbb"),
            ("route_2q", "flowgate\nroute\n2q", "#6699cc"),
            ("nat_2q", "flowgate\nNAT\n2q", "#ee99aa"),
            ("ovs", "OVS-DPDK\nct NAT\n2q", "#ddaa33")):
        m = num(k.get(f"{mode}_mpps_median"))
        if m is None:
            continue
        names.append(label)
        med.append(m)
        colors.append(color)
        lo.append(m - (num(k.get(f"{mode}_mpps_min")) or m))
        hi.append((num(k.get(f"{mode}_mpps_max")) or m) - m)
    if names:
        bars = b.bar(names, med, yerr=[lo, hi], capsize=6, color=colors)
        for r, v in zip(bars, med):
            b.annotate(f"{v:.3f}", (r.get_x() + r.get_width() / 2, v), textcoords="offset points",
                       xytext=(0, 8), ha="center", fontsize=9)
    flows = k.get("link_flows", "?")
    b.set_ylabel("Mpps received back by the generator")
    ratios = []
    for key, short in (("nat_vs_testpmd_macswap", "NAT/macswap 1q"),
                       ("route_2q_vs_testpmd_macswap_2q", "route/macswap 2q"),
                       ("nat_2q_vs_ovs_dpdk_nat", "NAT/OVS 2q")):
        v = num(k.get(key))
        if v is not None:
            ratios.append(f"{short} {v:.2f}")
    b.set_title(f"net_memif link, testpmd flowgen, {flows} flows (median, min..max)\n"
                + ", ".join(ratios), fontsize=10)
    b.tick_params(axis="x", labelsize=8)
    b.set_ylim(bottom=0)
    b.grid(True, axis="y", alpha=0.3)
    for key in ("route_vs_testpmd_macswap", "nat_vs_testpmd_macswap",
                "route_2q_vs_testpmd_macswap_2q", "nat_2q_vs_ovs_dpdk_nat"):
        if key in k:
            print(f"{key}: {k[key]}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot written: {out}")


if __name__ == "__main__":
    main()
