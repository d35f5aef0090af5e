#!/usr/bin/env python3
"""scripts/bench report: raw.jsonl -> results.json, results.md, chart.png.

Statistics: every figure is the median over rounds with the spread
[min-max] of the rounds. Figures relative to D (added latency, ratios) are
computed per round first (peer in round r against D in round r, measured
minutes apart at most) and then summarised the same way.

  report.py --raw R --meta M --out DIR [--docs docs/benchmarks.md --docs-chart PNG]
  report.py --raw R --self-check --min-added-us 100      # exit 1 if the delay is not seen
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

PEER_ORDER = ["D", "X", "K", "haproxy", "nginx", "rm-uring-fp", "rm-uring-nofp", "rm-epoll-fp", "rm-epoll-nofp"]
RM_PEERS = [p for p in PEER_ORDER if p.startswith("rm-")]
PEER_LABEL = {
    "D": "D (direct)",
    "X": "X (direct, client on the proxy CPU)",
    "K": "K (direct + sk_msg)",
    "haproxy": "HAProxy",
    "nginx": "nginx",
    "rm-uring-fp": "ringmesh io_uring, fast path",
    "rm-uring-nofp": "ringmesh io_uring, no fast path",
    "rm-epoll-fp": "ringmesh epoll, fast path",
    "rm-epoll-nofp": "ringmesh epoll, no fast path",
}
DEFAULT_RM = "rm-uring-fp"
NO_PROXY = ("D", "X", "K")
CONTENDED = 0.10  # foreign CPU share above which a record is flagged
S3_REF_LIMIT_US = 1000  # D's p99 at 50% load above this: S3 goal inconclusive


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    return recs


class Stat:
    def __init__(self, values):
        self.values = [v for v in values if v is not None]

    @property
    def ok(self):
        return bool(self.values)

    @property
    def med(self):
        return statistics.median(self.values) if self.values else None

    @property
    def lo(self):
        return min(self.values) if self.values else None

    @property
    def hi(self):
        return max(self.values) if self.values else None

    def as_dict(self):
        return {"median": self.med, "min": self.lo, "max": self.hi, "n": len(self.values)}


def fmt(v, digits=None):
    if v is None:
        return "–"
    a = abs(v)
    if digits is None:
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
    if a >= 10000:
        return "{:,.0f}".format(v)
    return "{:.{d}f}".format(v, d=digits)


def cell(st, digits=None, spread=True):
    if st is None or not st.ok:
        return "–"
    if not spread or len(st.values) < 2:
        return fmt(st.med, digits)
    return "%s [%s–%s]" % (fmt(st.med, digits), fmt(st.lo, digits), fmt(st.hi, digits))


class Data:
    def __init__(self, recs):
        self.recs = recs
        # (scenario, case, peer) -> round -> metrics
        self.by = defaultdict(dict)
        self.errors = []
        self.contended = []
        for r in recs:
            self.by[(r["scenario"], r["case"], r["peer"])][r["round"]] = r
            m = r["m"]
            if m.get("error"):
                self.errors.append("%s %s %s round %d: %s" % (r["peer"], r["scenario"], r["case"], r["round"],
                                                              m["error"]))
            if m.get("foreign_frac", 0) > CONTENDED:
                self.contended.append(r)
        present = {k[2] for k in self.by}
        self.peers = []
        for sfx in [""] + sorted({suffix(p) for p in present} - {""}):
            self.peers += [p + sfx for p in PEER_ORDER if p + sfx in present]
        self.peers += sorted(present - set(self.peers))

    def rounds(self, sc, case, peer):
        return self.by.get((sc, case, peer), {})

    def stat(self, sc, case, peer, key, fn=None):
        vals = []
        for rnd, r in sorted(self.rounds(sc, case, peer).items()):
            m = r["m"]
            if m.get("error"):
                continue  # listed under "Failed runs"
            v = fn(r) if fn else m.get(key)
            if v is not None:
                vals.append(v)
        return Stat(vals)

    def vs(self, sc, case, peer, key, ref, op, ref_case=None, ref_sc=None):
        """Per-round peer (op) ref, e.g. added latency or ratio."""
        vals = []
        ref_rounds = self.rounds(ref_sc or sc, ref_case or case, ref)
        for rnd, r in sorted(self.rounds(sc, case, peer).items()):
            rr = ref_rounds.get(rnd)
            if rr is None:
                continue
            if r["m"].get("error") or rr["m"].get("error"):
                continue
            a, b = r["m"].get(key), rr["m"].get(key)
            if a is None or b is None:
                continue
            if op == "-":
                vals.append(a - b)
            elif b:
                vals.append(a / b)
        return Stat(vals)


# ------------------------------------------------------------- tables ---

def base(p):
    return p.split("@", 1)[0]


def suffix(p):
    return p[len(base(p)):]


def label(p):
    return PEER_LABEL.get(base(p), base(p))


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def scenario_tables(d, meta, sfx=""):
    sizes = meta.get("sizes", {})
    md = []
    proxies = [p for p in d.peers if base(p) not in NO_PROXY and suffix(p) == sfx]
    D = "D" + sfx

    def peers_in(sc):
        return [p for p in d.peers if suffix(p) == sfx and any(k[0] == sc and k[2] == p for k in d.by)]

    if peers_in("S1"):
        rows = []
        for p in peers_in("S1"):
            rows.append([label(p), cell(d.stat("S1", "P1", p, "gbps")), cell(d.stat("S1", "P4", p, "gbps")),
                         cell(d.vs("S1", "P1", p, "gbps", D, "/"), 2),
                         cell(d.stat("S1", "P1", p, "cpu_s_per_gb"), 2),
                         cell(d.stat("S1", "P4", p, "cpu_s_per_gb"), 2)])
        md.append("### S1 bulk TCP (iperf3, %s s per run)\n\n" % sizes.get("S1_seconds", "?") + table(
            ["peer", "1 stream Gbit/s", "4 streams Gbit/s", "1 stream ÷ D", "proxy CPU s/GB (1)",
             "proxy CPU s/GB (4)"], rows))

    if peers_in("S2"):
        for case, clabel in (("64B", "64 B"), ("1024B", "1 KiB")):
            rows = []
            for p in peers_in("S2"):
                rows.append([label(p), cell(d.stat("S2", case, p, "p50_us")),
                             cell(d.stat("S2", case, p, "p99_us")), cell(d.stat("S2", case, p, "p999_us")),
                             cell(d.vs("S2", case, p, "p50_us", D, "-")) if p != D else "–",
                             cell(d.vs("S2", case, p, "p99_us", D, "-")) if p != D else "–",
                             cell(d.stat("S2", case, p, "cpu_us_per_rt"))])
            md.append("### S2 request/response, one warm connection, %s (rm-tcp rr, %s round trips)\n\n" % (
                clabel, sizes.get("S2_count", "?")) + table(
                ["peer", "p50 µs", "p99 µs", "p99.9 µs", "added p50 µs", "added p99 µs", "proxy CPU µs/RT"], rows))

    if peers_in("S3"):
        cap = d.stat("S3", "capacity", "D", "capacity_rps")
        loads = sorted({int(k[1][4:]) for k in d.by if k[0] == "S3" and k[1].startswith("load")})
        head = ["peer"]
        for l in loads:
            head += ["%d%% p50 µs" % l, "%d%% p99 µs" % l, "%d%% added p99 µs" % l]
        head += ["unanswered (all loads)"]
        rows = []
        for p in peers_in("S3"):
            row = [label(p)]
            inc = 0
            for l in loads:
                c = "load%d" % l
                row += [cell(d.stat("S3", c, p, "p50_us")), cell(d.stat("S3", c, p, "p99_us")),
                        cell(d.vs("S3", c, p, "p99_us", D, "-")) if p != D else "–"]
                inc += sum(r["m"].get("incomplete", 0) for r in d.rounds("S3", c, p).values())
            row.append(str(inc))
            rows.append(row)
        tick = sizes.get("S3_tick_us", 0)
        sending = ("requests sent on a %s µs tick (the send lag counts in the latency)" % tick if tick
                   else "a wake-up per request")
        md.append("### S3 open loop, %s connections, 64 B, loads relative to D's capacity (%s req/s)\n\n"
                  "Latency from each request's scheduled send time; %s.\n\n" % (
                      sizes.get("S3_conns", 16), fmt(cap.med), sending) + table(head, rows))

    if peers_in("S4"):
        rows = []
        for p in peers_in("S4"):
            rows.append([label(p), cell(d.stat("S4", "conn64B", p, "conns_per_s")),
                         cell(d.vs("S4", "conn64B", p, "conns_per_s", D, "/"), 2),
                         cell(d.stat("S4", "conn64B", p, "cpu_us_per_conn")),
                         cell(d.stat("S4", "conn64B", p, "p99_us")),
                         str(sum(r["m"].get("failed", 0) for r in d.rounds("S4", "conn64B", p).values()))])
        md.append("### S4 new connection per request (connect, 64 B echo, close; %s in parallel)\n\n" % sizes.get(
            "S4_parallel", 16) + table(["peer", "conns/s", "÷ D", "proxy CPU µs/conn", "p99 µs per conn", "failed"],
                                       rows))

    if peers_in("S5"):
        rows = []
        for p in peers_in("S5"):
            rows.append([label(p), cell(d.stat("S5", "http128B", p, "rps")),
                         cell(d.stat("S5", "http128B", p, "proxy_cores"), 2),
                         cell(d.stat("S5", "http128B", p, "rps_per_core")),
                         cell(d.stat("S5", "http128B", p, "p99_us"))])
        md.append("### S5 HTTP/1.1 keep-alive, 128 B responses, saturation (wrk -t1 -c%s)\n\n" % sizes.get(
            "S5_conns", 16) + table(["peer", "req/s", "proxy cores used", "req/s per proxy core", "wrk p99 µs"], rows))

    if peers_in("S6"):
        rows = []
        n = None
        for p in [p for p in proxies if p in peers_in("S6")]:
            st = d.stat("S6", "idle10k", p, "ok")
            n = n or (st.med if st.ok else None)
            rows.append([label(p), cell(d.stat("peer", "up", p, "rss_idle_kib", lambda r: r["m"].get(
                "rss_idle_kib", 0) / 1024.0), 1),
                         cell(d.stat("S6", "idle10k", p, "rss_before_kib", lambda r: r["m"]["rss_before_kib"] / 1024.0), 1),
                         cell(d.stat("S6", "idle10k", p, "rss_loaded_kib", lambda r: r["m"]["rss_loaded_kib"] / 1024.0), 1),
                         cell(d.stat("S6", "idle10k", p, "rss_per_conn_bytes")), cell(st, 0, spread=False)])
        md.append("### S6 idle proxied connections (%s connections, one 64 B echo each, then idle)\n\n" % fmt(
            meta.get("sizes", {}).get("S6_conns"), 0) + table(
            ["peer", "idle RSS MiB (fresh)", "RSS MiB before", "RSS MiB with connections", "bytes per connection",
             "connections open"], rows))
    return "\n\n".join(md)


# -------------------------------------------------------------- goals ---

def goals(d, sfx=""):
    """Each goal: id, text, target, per ringmesh variant (value Stat, met)."""
    out = []
    D, H = "D" + sfx, "haproxy" + sfx

    def add(gid, text, target, fn, cmp):
        per = {}
        for p in RM_PEERS:
            if p + sfx not in d.peers:
                continue
            st = fn(p + sfx)
            if st is None or not st.ok:
                per[p + sfx] = (None, None)
            else:
                per[p + sfx] = (st, cmp(st.med))
        out.append({"id": gid, "goal": text, "target": target, "per": per})

    better_of = lambda: max(["haproxy" + sfx, "nginx" + sfx], key=lambda x: d.stat("S5", "http128B", x, "rps_per_core").med or 0)
    add("S1-D", "S1 1 stream ≥ 1.15× D", "≥ 1.15×", lambda p: d.vs("S1", "P1", p, "gbps", D, "/"), lambda v: v >= 1.15)
    add("S1-H", "S1 1 stream ≥ 1.4× HAProxy", "≥ 1.4×", lambda p: d.vs("S1", "P1", p, "gbps", H, "/"),
        lambda v: v >= 1.4)
    add("S2-p50", "S2 64 B added p50 over D", "≤ 10 µs", lambda p: d.vs("S2", "64B", p, "p50_us", D, "-"),
        lambda v: v <= 10)
    add("S2-p99", "S2 64 B added p99 over D", "≤ 25 µs", lambda p: d.vs("S2", "64B", p, "p99_us", D, "-"),
        lambda v: v <= 25)
    add("S2-cpu", "S2 64 B proxy CPU per round trip", "≤ 12 µs", lambda p: d.stat("S2", "64B", p, "cpu_us_per_rt"),
        lambda v: v <= 12)

    # "S3 added p99 <= 2x the S2 added p99", as a margin in µs (value minus
    # limit, <= 0 is met): a ratio means nothing once the S2 figure is 0 or
    # negative (a spliced connection is faster than D).
    def s3_margin(load):
        def f(p):
            a = d.vs("S3", load, p, "p99_us", D, "-")
            b = d.vs("S2", "64B", p, "p99_us", D, "-")
            if not a.ok or not b.ok:
                return None
            # medians of both (the two scenarios run minutes apart within a round)
            st = Stat([a.med - 2 * b.med])
            # The reference must be meaningful: if D itself has a p99 above
            # S3_REF_LIMIT_US at this load, the difference is noise of the
            # machine, not the proxy's.
            ref = d.stat("S3", load, D, "p99_us")
            st.inconclusive = ref.ok and ref.med > S3_REF_LIMIT_US
            st.note = "added p99 %s µs, limit %s µs%s" % (
                fmt(a.med), fmt(2 * b.med),
                "; D's own p99 at this load is %s µs" % fmt(ref.med) if st.inconclusive else "")
            return st
        return f
    add("S3", "S3 added p99 at 50% load minus 2× S2 added p99", "≤ 0 µs", s3_margin("load50"), lambda v: v <= 0)
    add("S3-10", "(informational) the same at 10% load", "≤ 0 µs", s3_margin("load10"), lambda v: v <= 0)
    add("S4-D", "S4 conns/s ≥ 0.65× D", "≥ 0.65×", lambda p: d.vs("S4", "conn64B", p, "conns_per_s", D, "/"),
        lambda v: v >= 0.65)
    add("S4-H", "S4 conns/s ≥ 1.15× HAProxy", "≥ 1.15×",
        lambda p: d.vs("S4", "conn64B", p, "conns_per_s", H, "/"), lambda v: v >= 1.15)
    add("S5", "S5 req/s per proxy core ≥ 1.3× the better of HAProxy and nginx", "≥ 1.3×",
        lambda p: d.vs("S5", "http128B", p, "rps_per_core", better_of(), "/"), lambda v: v >= 1.3)
    add("S6-conn", "S6 proxy RSS per idle proxied connection", "≤ 4096 B",
        lambda p: d.stat("S6", "idle10k", p, "rss_per_conn_bytes"), lambda v: v <= 4096)
    add("S6-idle", "S6 idle proxy RSS", "≤ 10 MiB",
        lambda p: d.stat("peer", "up", p, "rss_idle_kib", lambda r: r["m"].get("rss_idle_kib", 0) / 1024.0),
        lambda v: v <= 10)
    return out


def goals_table(gs, peers, shared=None):
    rm = [p for p in RM_PEERS if p in peers or p + "@shared" in peers]
    if not rm:
        return "_No ringmesh peer in this run: goals not evaluated._"
    units = {"S1-D": "×", "S1-H": "×", "S2-p50": " µs", "S2-p99": " µs", "S2-cpu": " µs", "S3": " µs", "S3-10": " µs",
             "S4-D": "×",
             "S4-H": "×", "S5": "×", "S6-conn": " B", "S6-idle": " MiB"}
    head = ["goal", "target"] + [PEER_LABEL[p] for p in rm]
    rows = []
    allg = [(g, "") for g in gs]
    if shared:
        allg += [(g, "@shared") for g in shared if g["id"].startswith(("S2", "S3"))]
    for g, sfx in allg:
        row = [g["goal"] + (" — *shared placement*" if sfx else ""), g["target"]]
        for p in rm:
            st, met = g["per"].get(p + sfx, (None, None))
            if st is None:
                row.append("not measured")
            else:
                digits = 2 if units[g["id"]] == "×" else None
                verdict = "**met**" if met else "**not met**"
                if getattr(st, "inconclusive", False):
                    verdict = "**inconclusive** (%s)" % st.note
                elif getattr(st, "note", ""):
                    verdict += " (%s)" % st.note
                row.append("%s%s %s" % (cell(st, digits), units[g["id"]], verdict))
        rows.append(row)
    return table(head, rows)


# -------------------------------------------------------------- chart ---

def chart(d, meta, outdir):
    if shutil.which("gnuplot") is None:
        return None
    peers = [p for p in d.peers if suffix(p) == ""]
    short = {"D": "D", "X": "X", "K": "K", "haproxy": "HAProxy", "nginx": "nginx", "rm-uring-fp": "rm uring+fp",
             "rm-uring-nofp": "rm uring", "rm-epoll-fp": "rm epoll+fp", "rm-epoll-nofp": "rm epoll"}
    panels = [
        ("S1 bulk, 1 stream (Gbit/s, higher is better)", lambda p: d.stat("S1", "P1", p, "gbps"), peers),
        ("S2 64 B round trip p50 (µs, lower is better)", lambda p: d.stat("S2", "64B", p, "p50_us"), peers),
        ("S2 64 B round trip p99 (µs, log, lower is better)", lambda p: d.stat("S2", "64B", p, "p99_us"), peers),
        ("S3 p99 at 50% of D's capacity (µs, log, lower is better)", lambda p: d.stat("S3", "load50", p, "p99_us"),
         peers),
        ("S4 connections/s (higher is better)", lambda p: d.stat("S4", "conn64B", p, "conns_per_s"), peers),
        ("S5 HTTP req/s per proxy core (higher is better)", lambda p: d.stat("S5", "http128B", p, "rps_per_core"),
         [p for p in peers if p not in NO_PROXY]),
        ("S6 proxy RSS per idle connection (bytes, lower is better)",
         lambda p: d.stat("S6", "idle10k", p, "rss_per_conn_bytes"), [p for p in peers if p not in NO_PROXY]),
        ("S2 proxy CPU per round trip (µs, lower is better)", lambda p: d.stat("S2", "64B", p, "cpu_us_per_rt"),
         [p for p in peers if p not in NO_PROXY]),
        ("SHARED placement: S2 64 B round trip p50 (µs, lower is better)",
         lambda p: d.stat("S2", "64B", p + "@shared", "p50_us"), [p for p in peers if p != "X"]),
        ("SHARED placement: S2 64 B proxy CPU per round trip (µs, lower is better)",
         lambda p: d.stat("S2", "64B", p + "@shared", "cpu_us_per_rt"), [p for p in peers if p not in NO_PROXY]),
    ]
    colors = {"D": "#7f7f7f", "X": "#c7c7c7", "K": "#bcbd22", "haproxy": "#1f77b4", "nginx": "#2ca02c", "rm-uring-fp": "#d62728",
              "rm-uring-nofp": "#ff9896", "rm-epoll-fp": "#9467bd", "rm-epoll-nofp": "#c5b0d5"}
    script = ["set terminal pngcairo size 1600,2200 font 'DejaVu Sans,10'",
              "set output '%s'" % os.path.join(outdir, "chart.png"),
              "set multiplot layout 5,2 title 'ringmesh vs peers — median of %s rounds, bars show min–max; %s; "
              "split placement (proxy on CPU 1) unless marked SHARED (all on CPU 0)' "
              "font ',13'" % (meta.get("rounds", "?"), meta.get("started_utc", "")),
              "set style fill solid 0.85 border -1", "set boxwidth 0.7", "set grid ytics lc rgb '#dddddd'",
              "unset key", "set xtics rotate by -30 left nomirror", "set ytics nomirror", "set border 3",
              "set yrange [0:*]", "set offsets 0.5,0.5,0,0"]
    ok = False
    for i, (title, fn, ps) in enumerate(panels):
        fname = os.path.join(outdir, "chart-%d.dat" % i)
        lines = []
        for p in ps:
            st = fn(p)
            if st is not None and st.ok:
                lines.append('%d "%s" %g %g %g 0x%s "%s"' % (len(lines), short.get(p, p), st.med, st.lo, st.hi,
                                                            colors.get(p, "#444444")[1:], fmt(st.med)))
        if not lines:
            script += ["set title \"%s\"" % title, "unset logscale y", "set xrange [0:1]", "set yrange [0:1]",
                       "set label 1 'not measured in this run' at graph 0.5,0.5 center", "plot 2 notitle",
                       "unset label 1", "set xrange [*:*]", "set yrange [0:*]"]
            continue
        ok = True
        with open(fname, "w") as f:
            f.write("\n".join(lines) + "\n")
        logscale = "log" in title
        script += ["set title \"%s\"" % title,
                   "set logscale y" if logscale else "unset logscale y",
                   "set yrange [*:*]" if logscale else "set yrange [0:*]",
                   "plot '%s' using 1:3:6:xtic(2) with boxes lc rgb variable, "
                   "'' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0 lw 1.2, "
                   "'' using 1:5:7 with labels offset 0,0.7 font ',8'" % fname]
    script.append("unset multiplot")
    if not ok:
        return None
    gp = os.path.join(outdir, "chart.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        print("gnuplot failed: " + r.stderr, file=sys.stderr)
        return None
    return os.path.join(outdir, "chart.png")


# ---------------------------------------------------------------- main ---

def checks(d):
    """Per peer over all rounds: what the BPF datapath did (K and ringmesh)."""
    agg = {}
    for r in d.recs:
        if r["scenario"] != "peer" or r["case"] != "down":
            continue
        m = r["m"]
        a = agg.setdefault(r["peer"], {"rounds": 0, "conn": [], "msg": [], "passed": 0, "miss": 0, "budget": 0,
                                       "upstream": 0, "server": 0, "spliced": None, "short": None,
                                       "direct": None, "back": None})
        a["rounds"] += 1
        if "kshortcut" in m:
            k = m["kshortcut"]
            a["msg"].append(k["msg_redirected"])
            a["passed"] += k["msg_pass_miss"] + k["msg_pass_committed"]
            a["miss"] += k["msg_pass_miss"]
        if "bpf_redirected" in m:
            a["conn"].append(m["bpf_redirected"])
            a["msg"].append(m["bpf_msg_redirected"])
            a["budget"] += m.get("bpf_msg_pass_budget_spent", 0)
            a["miss"] += m.get("bpf_msg_pass_miss", 0)
            a["upstream"] += m.get("bpf_upstream_sockhash_added", 0)
            a["server"] += m.get("bpf_server_sockhash_added", 0)
            if "bpf_msg_spliced" in m:  # recorded since 2026-11-26 12:00
                a["spliced"] = (a["spliced"] or 0) + m["bpf_msg_spliced"]
            if "bpf_sockhash_skipped_short_route" in m:  # recorded since 2026-11-26 15:00
                a["short"] = (a["short"] or 0) + m["bpf_sockhash_skipped_short_route"]
            if "bpf_connect_direct" in m:  # recorded since 2026-11-26 17:30
                a["direct"] = (a["direct"] or 0) + m["bpf_connect_direct"]
            if "bpf_msg_back_from_tcp" in m:  # recorded since 2026-11-26 20:00
                a["back"] = (a["back"] or 0) + m["bpf_msg_back_from_tcp"]
    lines = []
    for p in d.peers:
        if p not in agg:
            continue
        a = agg[p]
        if a["conn"]:
            lines.append("%s: per round %s–%s connects redirected to the proxy, %s–%s sk_msg redirects; in all "
                         "%s connects sent straight to an endpoint (socket LB), %d proxy -> server sockets joined by the server's end (%d upstream sockets inserted), "
                         "messages sent around the proxy (spliced): %s, "
                         "socket ends kept off the fast path on short routes: %s, "
                         "%d times a socket went over TCP on the budget (and came back %s times), %d on a first-write miss (%d rounds)" % (
                p, fmt(min(a["conn"]), 0), fmt(max(a["conn"]), 0), fmt(min(a["msg"]), 0), fmt(max(a["msg"]), 0),
                "(not recorded in this run)" if a["direct"] is None else fmt(a["direct"], 0), a["server"], a["upstream"], "not recorded in this run" if a["spliced"] is None else a["spliced"],
                "not recorded in this run" if a["short"] is None else a["short"], a["budget"],
                "(not recorded)" if a["back"] is None else fmt(a["back"], 0), a["miss"], a["rounds"]))
        else:
            lines.append("%s: per round %s–%s messages redirected; %d passed over TCP in all (%d first-write misses) "
                         "(%d rounds)" % (p, fmt(min(a["msg"]), 0), fmt(max(a["msg"]), 0), a["passed"], a["miss"],
                                          a["rounds"]))
    return lines


def self_check(d, min_added):
    base, slow = "rm-delay0", "rm-delay200"
    added = d.vs("S2", "64B", slow, "p50_us", base, "-")
    b = d.stat("S2", "64B", base, "p50_us")
    s = d.stat("S2", "64B", slow, "p50_us")
    print("self-check: ringmesh S2 64 B p50 without delay %s µs, with --delay-us 200 %s µs, added %s µs "
          "(must be ≥ %g µs in the median)" % (cell(b), cell(s), cell(added), min_added))
    if d.errors:
        print("self-check: FAIL: runs failed: " + "; ".join(d.errors))
        return 1
    if not added.ok or len(added.values) < 2:
        print("self-check: FAIL: not enough paired rounds")
        return 1
    if added.med < min_added:
        print("self-check: FAIL: the harness did not see the artificial delay")
        return 1
    print("self-check: PASS")
    return 0


def replace_block(text, begin, end, body):
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0:
        return text.rstrip() + "\n\n" + begin + "\n" + body + "\n" + end + "\n"
    return text[:i + len(begin)] + "\n" + body + "\n" + text[j:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta")
    ap.add_argument("--out")
    ap.add_argument("--docs")
    ap.add_argument("--docs-chart")
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--min-added-us", type=float, default=100)
    a = ap.parse_args()
    d = Data(load(a.raw))
    if a.self_check:
        sys.exit(self_check(d, a.min_added_us))
    meta = json.load(open(a.meta)) if a.meta and os.path.exists(a.meta) else {}
    meta["loadavg_at_end"] = open("/proc/loadavg").read().strip()
    gs = goals(d)
    has_shared = any(suffix(p) == "@shared" for p in d.peers)
    gs_shared = goals(d, "@shared") if has_shared else []

    summary = {"meta": meta, "figures": {}, "goals": [], "errors": d.errors,
               "contended_records": len(d.contended), "checks": checks(d)}
    for (sc, case, peer), rounds in sorted(d.by.items()):
        keys = set()
        for r in rounds.values():
            keys |= {k for k, v in r["m"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        summary["figures"].setdefault(sc, {}).setdefault(case, {})[peer] = {
            k: d.stat(sc, case, peer, k).as_dict() for k in sorted(keys)}
    for g in gs + gs_shared:
        summary["goals"].append({"id": g["id"], "goal": g["goal"], "target": g["target"], "per": {
            p: {"value": st.as_dict() if st else None,
                "met": None if getattr(st, "inconclusive", False) else met} for p, (st, met) in g["per"].items()}})

    md = []
    md.append("## Goals (ringmesh, ratios within this run)\n\n" + goals_table(gs, d.peers, gs_shared))
    has_split = any(suffix(p) == "" for p in d.peers)
    if has_split:
        md.append("## Split placement: clients and servers on CPU 0, the proxy on CPU 1\n\n" +
                  scenario_tables(d, meta, ""))
    if has_shared:
        md.append("## Shared placement: everything on CPU 0 (no cross-CPU wake-ups)\n\n" +
                  scenario_tables(d, meta, "@shared"))
    notes = []
    if meta.get("skipped_peers"):
        notes.append("Skipped peers (not built): " + ", ".join(meta["skipped_peers"]))
    if d.errors:
        notes.append("Failed runs (excluded from the figures where they have no value):\n\n" + "\n".join(
            "- " + e for e in d.errors))
    if d.contended:
        notes.append("%d of %d runs saw more than %d%% of the CPUs used by other processes on the machine "
                     "(see `foreign_frac` in raw.jsonl); their figures are noisier." % (
                         len(d.contended), len([r for r in d.recs if r["kind"] != "none"]), CONTENDED * 100))
    ch = checks(d)
    if ch:
        notes.append("Datapath checks (per peer slot):\n\n" + "\n".join("- " + c for c in ch))
    if notes:
        md.append("### Notes\n\n" + "\n\n".join(notes))
    body = "\n\n".join(md) + "\n"

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("# ringmesh benchmark %s\n\n" % meta.get("started_utc", ""))
        f.write("Command: `%s`; %s rounds; machine: %s, %s CPUs, %s GiB, kernel %s.\n\n" % (
            meta.get("command", "?").strip(), meta.get("rounds", "?"), meta.get("cpu_model", "?"), meta.get("cpus", "?"),
            meta.get("mem_gib", "?"), meta.get("kernel", "?")))
        f.write(body)
    png = chart(d, meta, a.out)

    if a.docs:
        doc = open(a.docs).read() if os.path.exists(a.docs) else "# Benchmarks\n"
        stamp = ("Latest full run: **%s** (`%s`, %s rounds; load average at start %s, at end %s; other processes "
                 "used %.0f%% of the CPUs at start). Raw data: `results/%s/` (not committed).\n\n" % (
                     meta.get("started_utc", "?"), meta.get("command", "?").strip(), meta.get("rounds", "?"),
                     meta.get("loadavg_at_start", "?").split(" ")[0], meta["loadavg_at_end"].split(" ")[0],
                     100 * meta.get("foreign_cpu_share_at_start", 0), os.path.basename(os.path.abspath(a.out))))
        if png and a.docs_chart:
            rel = os.path.relpath(a.docs_chart, os.path.dirname(os.path.abspath(a.docs)))
            stamp += "![benchmark chart](%s)\n\n" % rel
        demoted = re.sub(r"^(#+) ", lambda mt: "#" + mt.group(1) + " ", body, flags=re.M)
        doc = replace_block(doc, "<!-- bench:results:begin -->", "<!-- bench:results:end -->", stamp + demoted)
        with open(a.docs, "w") as f:
            f.write(doc)
        if png and a.docs_chart:
            shutil.copyfile(png, a.docs_chart)


if __name__ == "__main__":
    main()
