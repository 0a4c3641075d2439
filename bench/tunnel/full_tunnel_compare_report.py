#!/usr/bin/env python3
"""The table of bench/tunnel/run_full_tunnel_compare.sh: medians over rounds, min-max, the
ratios and issue 17's goals, from its raw TSV (round, system, key, value). Writes the JSON
(meta, per system: status per round, raw values, median/min/max; ratios; goals) to OUT and
prints the table.

Usage: full_tunnel_compare_report.py RAW.tsv OUT.json META_JSON
"""
import json
import statistics
import sys

SYSTEMS = ["dvpn-paid", "dvpn-free", "dvpn-paid-offloads-off", "wireguard-go", "openvpn-aes",
           "openvpn-chacha"]
PEERS = ["wireguard-go", "openvpn-aes", "openvpn-chacha"]
# key, column title, format
COLUMNS = [
    ("up1_mbps", "1 flow up", "%.0f"),
    ("down1_mbps", "1 flow down", "%.0f"),
    ("up4_mbps", "4 flows up", "%.0f"),
    ("udp_mbps", "UDP rx", "%.0f"),
    ("udp_loss_pct", "UDP loss%", "%.1f"),
    ("ping_idle_p50_ms", "idle p50", "%.3f"),
    ("ping_idle_p90_ms", "idle p90", "%.3f"),
    ("ping_load_p50_ms", "load p50", "%.2f"),
    ("ping_load_p90_ms", "load p90", "%.2f"),
    ("ping_load_loss_pct", "load loss%", "%.1f"),
    ("cpu_s_per_gb", "tun CPU s/GB", "%.2f"),
    ("machine_cpu_s_per_gb", "all CPU s/GB", "%.2f"),
    ("machine_kernel_s_per_gb", "kernel s/GB", "%.2f"),
]
# Also in the JSON: up1_retransmits, down1_retransmits, up1_gb, ping_idle_loss_pct.


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def main():
    raw_path, out_path, meta = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    data = {}
    order = []
    for line in open(raw_path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            continue
        rnd, system, key, value = parts
        if system not in data:
            data[system] = {"status": {}, "transport": {}, "raw": {}}
            order.append(system)
        d = data[system]
        if key == "status":
            d["status"][rnd] = value
        elif key == "transport":
            d["transport"][rnd] = value
        elif rnd != "perf":
            v = num(value)
            if v is not None:
                d["raw"].setdefault(key, []).append(v)
    systems = [s for s in SYSTEMS if s in data] + [s for s in order if s not in SYSTEMS]
    for s in systems:
        d = data[s]
        d["rounds_ok"] = sum(1 for v in d["status"].values() if v == "ok")
        d["median"] = {k: statistics.median(v) for k, v in d["raw"].items() if v}
        d["min"] = {k: min(v) for k, v in d["raw"].items() if v}
        d["max"] = {k: max(v) for k, v in d["raw"].items() if v}
        problems = sorted({v for k, v in d["status"].items() if v != "ok" and k != "perf"})
        d["problems"] = problems

    def med(s, k):
        return data.get(s, {}).get("median", {}).get(k)

    print("Full tunnel vs wireguard-go and OpenVPN (%s, %s CPUs, %s, %s)" %
          (meta.get("date"), meta.get("nproc"), meta.get("kernel"), meta.get("cpu")))
    print("repo HEAD %s (the binaries: --build); %s rounds, iperf3 -t %s s; UDP -b %s -l 1300; ping: %s idle at 0.01 s, "
          "under load every 0.02 s during the one-flow down test" %
          (meta.get("repo_head"), meta.get("rounds"), meta.get("time_s"), meta.get("udp_rate"),
           meta.get("pings")))
    print("Mbit/s (iperf3 receiver), ms (ping RTT), CPU seconds per GB (10^9 bytes) of the "
          "one-flow up test: tun = the tunnel's processes (utime+stime), all = the whole machine "
          "(/proc/stat, includes iperf3 and other load), kernel = its system+irq+softirq part")
    print()
    head = "%-23s %3s " % ("median", "n") + " ".join("%12s" % c[1] for c in COLUMNS)
    print(head)
    for s in systems:
        d = data[s]
        if d["rounds_ok"] == 0:
            print("%-23s %3d  %s" % (s, 0, "; ".join(d["problems"]) or "no data"))
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            v = d["median"].get(key)
            cells.append("%12s" % (fmt % v if v is not None else "-"))
        print("%-23s %3d " % (s, d["rounds_ok"]) + " ".join(cells))
    print()
    print("%-23s %3s " % ("min-max", "") + " ".join("%12s" % c[1] for c in COLUMNS))
    for s in systems:
        d = data[s]
        if d["rounds_ok"] == 0:
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            lo, hi = d["min"].get(key), d["max"].get(key)
            cells.append("%12s" % ((fmt % lo) + "-" + (fmt % hi) if lo is not None else "-"))
        print("%-23s %3s " % (s, "") + " ".join(cells))
    for s in systems:
        d = data[s]
        if d["rounds_ok"] and d["problems"]:
            print("note: %s: %s" % (s, "; ".join(d["problems"])))
        tr = sorted(set(d["transport"].values()))
        if tr and tr != ["udp"]:
            print("note: %s: transport %s (not UDP in every round)" % (s, ",".join(tr)))
    print()

    # Ratios and goals.
    ratios, goals = {}, []

    def best_peer(key, lowest=False):
        vals = [(med(p, key), p) for p in PEERS if med(p, key) is not None]
        if not vals:
            return None, None
        v, p = (min if lowest else max)(vals)
        return v, p

    for key, name in (("up1_mbps", "up"), ("down1_mbps", "down")):
        pv, pp = best_peer(key)
        dv = med("dvpn-paid", key)
        if pv and dv is not None:
            ratios["dvpn-paid / best peer, one flow " + name] = round(dv / pv, 3)
            ok = dv >= 2 * pv
            goals.append(("one TCP flow %s >= 2x the better peer" % name, ok,
                          "dvpn-paid %.0f Mbit/s vs %s %.0f Mbit/s: %.2fx" %
                          (dv, pp, pv, dv / pv)))
        else:
            goals.append(("one TCP flow %s >= 2x the better peer" % name, None,
                          "not measured (dvpn-paid %s, peers %s)" % (dv, pv)))
    for key, name in (("ping_idle_p50_ms", "idle"), ("ping_load_p50_ms", "under load")):
        pv, pp = best_peer(key, lowest=True)
        dv = med("dvpn-paid", key)
        if pv and dv is not None:
            ratios["dvpn-paid / best peer, ping p50 " + name] = round(dv / pv, 3)
            goals.append(("ping p50 %s no worse than the peers'" % name, dv <= pv,
                          "dvpn-paid %.3f ms vs best peer %s %.3f ms" % (dv, pp, pv)))
        else:
            goals.append(("ping p50 %s no worse than the peers'" % name, None, "not measured"))
    for key, name in (("up1_mbps", "up"), ("down1_mbps", "down")):
        pv, fv = med("dvpn-paid", key), med("dvpn-free", key)
        if pv is not None and fv:
            ratios["paid / free, one flow " + name] = round(pv / fv, 3)
            goals.append(("paid >= 95%% of free, one flow %s" % name, pv >= 0.95 * fv,
                          "paid %.0f vs free %.0f Mbit/s: %.1f%%" % (pv, fv, 100 * pv / fv)))
        else:
            goals.append(("paid >= 95%% of free, one flow %s" % name, None, "not measured"))
    pv, fv = med("dvpn-paid", "up1_mbps"), med("dvpn-paid-offloads-off", "up1_mbps")
    if pv is not None and fv:
        ratios["offloads default / off, one flow up"] = round(pv / fv, 3)
    print("ratios (medians): " + "; ".join("%s %.2f" % kv for kv in ratios.items()))
    for name, ok, text in goals:
        print("goal: %-50s %-8s %s" % (name, {True: "MET", False: "NOT MET", None: "UNKNOWN"}[ok],
                                        text))
    print("free vs paid: " + meta.get("free", ""))
    if meta.get("perf"):
        print("perf: " + meta["perf"])

    out = {"meta": meta, "systems": {s: data[s] for s in systems}, "ratios": ratios,
           "goals": [{"goal": n, "met": ok, "detail": t} for n, ok, t in goals]}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
