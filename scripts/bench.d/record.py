#!/usr/bin/env python3
"""Turns one tool run of scripts/bench into one JSON line of raw.jsonl.

Every record: round, peer, scenario, case, kind, rc, proxy (0/1),
cpu_s (proxy utime+stime over the run), cpu1_s (busy time of the proxy CPU),
wall_s, and `m`: the metrics of that scenario, with derived per-unit CPU
costs (only when the peer has a proxy).
"""
import argparse
import json
import re
import sys


def parse_iperf3(text):
    d = json.loads(text)
    if "error" in d and "end" not in d:
        return {"error": d["error"]}
    end = d["end"]
    recv = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    m = {
        "gbps": recv.get("bits_per_second", 0) / 1e9,
        "bytes": recv.get("bytes", 0),
        "seconds": recv.get("seconds", 0),
        "retransmits": sent.get("retransmits", 0),
    }
    if "error" in d:
        m["error"] = d["error"]
    return m


def last_json(text):
    lines = [l for l in text.splitlines() if l.strip().startswith("{")]
    if not lines:
        return {"error": "no output"}
    return json.loads(lines[-1])


def parse_rr(text):
    d = last_json(text)
    m = {k: d[k] for k in ("count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "rps",
                           "mismatches") if k in d}
    if "error" in d:
        m["error"] = d["error"]
    return m


def parse_plain_json(text):
    return last_json(text)


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _us(v):
    mt = re.match(r"([\d.]+)(us|ms|s)$", v)
    return float(mt.group(1)) * _UNITS[mt.group(2)] if mt else None


def parse_wrk(text):
    m = {}
    mt = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if mt:
        m["rps"] = float(mt.group(1))
    mt = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if mt:
        m["requests"] = int(mt.group(1))
        m["seconds"] = float(mt.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[mt.group(3)]
    for pct in ("50", "90", "99"):
        mt = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        if mt:
            m["p%s_us" % pct] = _us(mt.group(1))
    mt = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if mt:
        m["socket_errors"] = sum(int(x) for x in mt.groups())
    mt = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if mt:
        m["non2xx"] = int(mt.group(1))
    if "rps" not in m:
        m["error"] = "wrk: no Requests/sec in output"
    return m


PARSERS = {"iperf3": parse_iperf3, "rr": parse_rr, "openloop": parse_plain_json, "cps": parse_plain_json,
           "wrk": parse_wrk}


def derive(scenario, m, cpu_s, wall_s, extra, proxy):
    if not proxy:
        return
    if scenario == "S1" and m.get("bytes"):
        m["cpu_s_per_gb"] = cpu_s / (m["bytes"] / 1e9)
    elif scenario == "S2" and extra.get("rr_total"):
        m["cpu_us_per_rt"] = cpu_s * 1e6 / extra["rr_total"]
    elif scenario == "S3" and m.get("sent"):
        m["cpu_us_per_req"] = cpu_s * 1e6 / m["sent"]
    elif scenario == "S4" and m.get("ok"):
        m["cpu_us_per_conn"] = cpu_s * 1e6 / m["ok"]
    elif scenario == "S5" and m.get("requests"):
        # CPU time comes in clock ticks (10 ms): a proxy that is out of the
        # data path (spliced) may show none; count one tick, a lower bound.
        m["rps_per_core"] = m["requests"] / max(cpu_s, 0.01)
        m["proxy_cores"] = cpu_s / wall_s if wall_s else 0
    elif scenario == "S6" and "rss_loaded_kib" in m:
        ok = max(1, m.get("ok", 0))
        m["rss_per_conn_bytes"] = (m["rss_loaded_kib"] - m["rss_before_kib"]) * 1024.0 / ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--kind", required=True)
    ap.add_argument("--file")
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--proxy", type=int, default=0)
    ap.add_argument("--cpu-s", type=float, default=0.0)
    ap.add_argument("--cpu1-s", type=float, default=0.0)
    ap.add_argument("--wall-s", type=float, default=0.0)
    ap.add_argument("--extra", default="{}")
    a = ap.parse_args()
    extra = json.loads(a.extra or "{}")
    if a.kind == "none":
        m = dict(extra)
    else:
        text = open(a.file).read()
        try:
            m = PARSERS[a.kind](text)
        except (ValueError, KeyError) as e:
            m = {"error": "unparsable %s output: %s" % (a.kind, e)}
        for k, v in extra.items():
            m.setdefault(k, v)
    if a.kind != "none":
        derive(a.scenario, m, a.cpu_s, a.wall_s, extra, a.proxy)
    elif a.scenario == "S6":
        derive(a.scenario, m, a.cpu_s, a.wall_s, extra, a.proxy)
    if a.rc != 0 and "error" not in m:
        m["error"] = "exit %d" % a.rc
    rec = {"round": a.round, "peer": a.peer, "scenario": a.scenario, "case": a.case, "kind": a.kind, "rc": a.rc,
           "proxy": a.proxy, "cpu_s": round(a.cpu_s, 3), "cpu1_s": round(a.cpu1_s, 3), "wall_s": round(a.wall_s, 3),
           "m": m}
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    if "error" in m:
        print("record: %s %s %s round %d: %s" % (a.peer, a.scenario, a.case, a.round, m["error"]), file=sys.stderr)


if __name__ == "__main__":
    main()
