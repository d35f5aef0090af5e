# shellcheck shell=bash
# scripts/bench helpers: the cluster, CPU placement, CPU/RSS sampling and
# recording. Sourced by scripts/bench after tests/netns/{lib,mesh}.sh.
#
# Topology (one node n1, built with lib.sh):
#   pod client 198.18.1.10   load generators (rm-tcp, rm-bench, iperf3, wrk)
#   pod server 198.18.1.11   servers: rm-tcp echo :9001, iperf3 :5201, nginx http :8080
#   service VIP 198.18.200.10 (ringmesh only) -> server, ports 9001 5201 8080
# CPU placement, the same for every peer:
#   CPU 0 (BENCH_CPU_LOAD):  every client and server process
#   CPU 1 (BENCH_CPU_PROXY): the proxy under test (one worker) and, for
#                            ringmesh, its agent (idle during measurements)

BENCH_CPU_LOAD=${BENCH_CPU_LOAD:-0}
BENCH_CPU_PROXY=${BENCH_CPU_PROXY:-1}
BENCH_VIP=198.18.200.10
PORT_ECHO=9001 PORT_IPERF=5201 PORT_HTTP=8080
# explicit-proxy listen ports of HAProxy and nginx (127.0.0.1 in the client pod)
PXPORT_ECHO=19001 PXPORT_IPERF=15201 PXPORT_HTTP=18080
CLIENT_IP="" SERVER_IP=""
S3_CAPACITY=""
CLK_TCK=$(getconf CLK_TCK)
# Descriptor limit for servers and proxies: as high as this machine lets us
# (raising the hard limit needs CAP_SYS_RESOURCE, which some sandboxes drop).
BENCH_NOFILE=$(ulimit -Hn)
if [[ $BENCH_NOFILE == unlimited ]] || ((BENCH_NOFILE > 200000)); then
  BENCH_NOFILE=200000
fi
if prlimit --nofile=200000:200000 -- true 2>/dev/null; then
  BENCH_NOFILE=200000
fi

bench_log() { printf '[%s bench] %s\n' "$(date +%T)" "$*" >&2; }

# Scenario sizes: full and --quick.
if ((QUICK)); then
  S1_SECONDS=1 S2_COUNT=5000 S3_MS=1000 S4_MS=1000 S5_SECONDS=1
else
  S1_SECONDS=2 S2_COUNT=10000 S3_MS=1000 S4_MS=1500 S5_SECONDS=2
fi
# S6 wants 10,000 idle connections; a proxy holds two descriptors per
# connection, so with a lower descriptor limit the count is the largest
# hundred that fits (the result is per connection; the report says so).
S6_CONNS=10000
if (((BENCH_NOFILE - 200) / 2 < S6_CONNS)); then
  S6_CONNS=$(((BENCH_NOFILE - 200) / 2 / 100 * 100))
fi
S2_WARMUP=1000
S3_CONNS=16 S3_LOADS="10 50 80"
# S3's generator sends on a tick (rm-bench --tick-us) instead of waking at
# every request's due time: on this VM a wake-up costs 15-22 µs of the CPU
# the client shares with the server, and per-request wake-ups saturated
# that CPU at half of D's capacity (D's p99 there was 3.7-4.2 ms, p90 1.5
# ms). Answers are still timed as they arrive; the send lag counts in the
# latency, the same for every peer. 0 = wake at every due time.
S3_TICK_US=${S3_TICK_US:-50}
S4_PARALLEL=16
S5_CONNS=16
BENCH_SERVER_DEADLINE_MS=$((RM_TIMEOUT_S * 1000))

_bench_ns_sysctl() {  # NETNS_PATH KEY=VALUE...
  local ns=$1
  shift
  nsenter --net="$ns" sysctl -qw "$@" >/dev/null
}

# bench_cluster_up: node n1, pods client and server, the servers on CPU 0.
bench_cluster_up() {
  rm_node n1
  rm_pod n1 client
  rm_pod n1 server
  CLIENT_IP=$(rm_pod_ip client) SERVER_IP=$(rm_pod_ip server)
  local p
  for p in client server; do
    # Connection-rate runs leave many TIME_WAIT sockets in the client pod
    # (where the proxies' upstream sockets live too): widen the port range
    # and let connect() reuse TIME_WAIT ports.
    # The listen ports of the servers and proxies are kept out of the
    # ephemeral range, or a connect() could take one and a proxy could not
    # bind it after a restart.
    _bench_ns_sysctl "$(rm_pod_netns_path $p)" net.ipv4.ip_local_port_range="1024 65535" \
      net.ipv4.ip_local_reserved_ports="$PORT_IPERF,$PORT_HTTP,$PORT_ECHO,15001,$PXPORT_IPERF,$PXPORT_HTTP,$PXPORT_ECHO" \
      net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
  done
  _bench_ns_sysctl "$(rm_node_netns_path n1)" net.core.somaxconn=65535

  rm_spawn --log "$OUT/logs/server-echo.log" server taskset -c "$BENCH_CPU_LOAD" prlimit --nofile="$BENCH_NOFILE:$BENCH_NOFILE" -- \
    "$RM_TCP" --deadline-ms "$BENCH_SERVER_DEADLINE_MS" serve --listen "$SERVER_IP:$PORT_ECHO" --tag server \
    --mode echo --max-conns 30000 --idle-ms 3600000 --backlog 65535 >/dev/null
  rm_spawn --log "$OUT/logs/server-iperf3.log" server taskset -c "$BENCH_CPU_LOAD" \
    iperf3 -s -B "$SERVER_IP" -p "$PORT_IPERF" >/dev/null
  _bench_http_server_conf
  rm_spawn --log "$OUT/logs/server-nginx.log" server taskset -c "$BENCH_CPU_LOAD" \
    nginx -p "$RM_TMP/srv-nginx" -c "$RM_TMP/srv-nginx/nginx.conf" -e "$RM_TMP/srv-nginx/error.log" >/dev/null
  rm_wait_port server "$SERVER_IP" "$PORT_ECHO" 5 || rm_fail "echo server did not start"
  rm_wait_port server "$SERVER_IP" "$PORT_IPERF" 5 || rm_fail "iperf3 server did not start"
  rm_wait_port server "$SERVER_IP" "$PORT_HTTP" 5 || rm_fail "nginx http server did not start"
  bench_log "cluster up: client $CLIENT_IP, server $SERVER_IP (echo :$PORT_ECHO, iperf3 :$PORT_IPERF, http :$PORT_HTTP)"
}

# The S5 origin: nginx, one worker, a 128-byte static file, keep-alive
# without a request limit.
_bench_http_server_conf() {
  local d=$RM_TMP/srv-nginx
  mkdir -p "$d/www" "$d/tmp"
  head -c 127 /dev/zero | tr '\0' 'x' >"$d/www/index.html"
  echo >>"$d/www/index.html"
  cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $BENCH_NOFILE;
events { worker_connections 20000; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  server {
    listen $SERVER_IP:$PORT_HTTP backlog=65535;
    location / { root $d/www; index index.html; }
  }
}
EOF
}

# ------------------------------------------------------------ sampling ---

# bench_tree PID...: the PIDs and all their descendants.
bench_tree() {
  local p c
  for p in "$@"; do
    [[ -e /proc/$p ]] || continue
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null); do
      bench_tree "$c"
    done
  done
}

# bench_cpu_ticks PID...: utime+stime (clock ticks) summed over the PIDs and
# their descendants (threads are included in a process's /proc/PID/stat).
bench_cpu_ticks() {
  local p s sum=0
  local -a f
  for p in $(bench_tree "$@"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}

# bench_cpu_busy_ticks CPU: non-idle ticks of one CPU from /proc/stat
# (user nice system irq softirq steal; softirq work shows up here even when
# it runs outside the proxy's own context).
bench_cpu_busy_ticks() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# bench_rss_kib PID...: VmRSS summed over the PIDs and their descendants.
bench_rss_kib() {
  local p sum=0 v
  for p in $(bench_tree "$@"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# ------------------------------------------------------------ running ---

# bench_busy_ticks: non-idle ticks of all CPUs together.
bench_busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# bench_run_usage_us: CPU time of everything in the run's cgroup (servers,
# clients, proxies), microseconds.
bench_run_usage_us() {
  awk '$1 == "usage_usec" { print $2 }' "$RM_CG/cpu.stat" 2>/dev/null || echo 0
}

# bench_run SCENARIO CASE KIND CMD...: runs CMD in the client pod on the
# load CPU, measuring the proxy's CPU time (PEER_PIDS), CPU 1's busy time and
# wall time around it, and appends one record to raw.jsonl. Extra JSON for
# the record can be given in BENCH_EXTRA. `foreign_frac` is the share of
# both CPUs used by processes outside this run (other work on a shared
# machine); the report flags records where it is high.
# bench_rm_counters: the datapath's counters as ringmeshctl's JSON.
bench_rm_counters() {
  "$MESH_CTL" --pin-dir "$(rm_node_pindir n1)" -o json bpf
}
# the proxy's own counters (Prometheus text), reduced to "name value" lines
bench_rm_proxy_metrics() {
  mesh_admin n1 /metrics 2>/dev/null | awk '/^ringmesh_proxy_[a-z_]*_total(\{[^}]*\})? / { print $1, $2 }'
}

bench_run() {
  local scenario=$1 case=$2 kind=$3
  shift 3
  local out=$OUT/logs/r${BENCH_ROUND}-${BENCH_PEER}${BENCH_PEER_SUFFIX:-}-${scenario}-${case}.out
  local c0 c1 b0 b1 t0 t1 a0 a1 u0 u1 rc=0
  if [[ -n ${_RM_AGENT_PID:-} ]]; then
    bench_rm_counters >"$out.bpf0" 2>/dev/null || true
    bench_rm_proxy_metrics >"$out.pm0" || true
  fi
  c0=$(bench_cpu_ticks "${PEER_PIDS[@]}")
  b0=$(bench_cpu_busy_ticks "$BENCH_CPU_PROXY")
  a0=$(bench_busy_ticks)
  u0=$(bench_run_usage_us)
  t0=$(date +%s%N)
  rm_exec client taskset -c "${PEER_CLIENT_CPU:-$BENCH_CPU_LOAD}" "$@" >"$out" 2>"$out.err" || rc=$?
  t1=$(date +%s%N)
  c1=$(bench_cpu_ticks "${PEER_PIDS[@]}")
  b1=$(bench_cpu_busy_ticks "$BENCH_CPU_PROXY")
  a1=$(bench_busy_ticks)
  u1=$(bench_run_usage_us)
  if [[ -n ${_RM_AGENT_PID:-} ]]; then
    # what the datapath decided during this run: counter deltas, kept next to
    # the client's output (not part of the report)
    { bench_rm_counters >"$out.bpf1" 2>/dev/null &&
      python3 -c 'import json,sys
a = json.load(open(sys.argv[1])).get("counters", {})
b = json.load(open(sys.argv[2])).get("counters", {})
for k in b:
    if b[k] != a.get(k, 0):
        print(k, b[k] - a.get(k, 0))' "$out.bpf0" "$out.bpf1" >"$out.counters" 2>/dev/null; } || true
    # and the proxy's counters that moved (splice holds, spliced bytes ...)
    { bench_rm_proxy_metrics >"$out.pm1" &&
      awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "proxy %s %.0f\n", $1, $2 - a[$1] }' \
        "$out.pm0" "$out.pm1" >>"$out.counters"; } || true
    rm -f "$out.bpf0" "$out.bpf1" "$out.pm0" "$out.pm1"
  fi
  if ((rc != 0)); then
    bench_log "warning: $BENCH_PEER $scenario $case exited $rc: $(tail -c 300 "$out.err" | tr '\n' ' ')"
  fi
  local foreign
  foreign=$(awk -v a0="$a0" -v a1="$a1" -v u0="$u0" -v u1="$u1" -v h="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    -v n="$(nproc)" 'BEGIN { f = ((a1 - a0) / h - (u1 - u0) / 1e6) / (n * (t1 - t0) / 1e9); if (f < 0) f = 0; printf "%.3f", f }')
  local extra=${BENCH_EXTRA:-"{}"}
  extra=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["foreign_frac"]=float(sys.argv[2]); print(json.dumps(d))' "$extra" "$foreign")
  python3 "$BENCH_D/record.py" --raw "$RAW" --round "$BENCH_ROUND" --peer "$BENCH_PEER${BENCH_PEER_SUFFIX:-}" \
    --scenario "$scenario" --case "$case" --kind "$kind" --file "$out" --rc "$rc" \
    --proxy "$PEER_HAS_PROXY" --cpu-s "$(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN {print (b - a) / h}')" \
    --cpu1-s "$(awk -v a="$b0" -v b="$b1" -v h="$CLK_TCK" 'BEGIN {print (b - a) / h}')" \
    --wall-s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 1e9}')" --extra "$extra"
  BENCH_EXTRA=""
}

# bench_wait_quiet MAX_S: waits (at most MAX_S) until other processes use
# less than 10% of the machine over 2 s; returns the last measured share.
bench_wait_quiet() {
  local max=$1 start=$SECONDS a0 a1 f
  while :; do
    a0=$(bench_busy_ticks)
    rm_sleep 2
    a1=$(bench_busy_ticks)
    f=$(awk -v a="$a0" -v b="$a1" -v h="$CLK_TCK" -v n="$(nproc)" 'BEGIN { printf "%.2f", (b - a) / h / (2 * n) }')
    if awk -v f="$f" 'BEGIN { exit !(f < 0.10) }'; then
      break
    fi
    if ((SECONDS - start >= max)); then
      bench_log "WARNING: the machine is busy with other work (${f} of all CPUs); measuring anyway, results will be noisy"
      break
    fi
    bench_log "waiting for a quiet machine: other processes use ${f} of all CPUs (up to ${max}s)"
  done
  BENCH_FOREIGN_AT_START=$f
}

# bench_record SCENARIO CASE JSON: a record that is not a tool run.
bench_record() {
  python3 "$BENCH_D/record.py" --raw "$RAW" --round "$BENCH_ROUND" --peer "$BENCH_PEER${BENCH_PEER_SUFFIX:-}" \
    --scenario "$1" --case "$2" --kind none --proxy "$PEER_HAS_PROXY" --extra "$3"
}

# host and port of a peer target "IP:PORT"
bench_host() { printf '%s\n' "${1%:*}"; }
bench_port() { printf '%s\n' "${1##*:}"; }

# S3 needs D's capacity: closed loop over 16 connections, direct, 3 times;
# the median is the 100% of the open-loop loads.
bench_calibrate_s3() {
  local i rates=()
  BENCH_PEER=D BENCH_ROUND=0 PEER_HAS_PROXY=0 PEER_PIDS=()
  for i in 1 2 3; do
    local o
    o=$(rm_exec client taskset -c "$BENCH_CPU_LOAD" "$RM_BENCH" openloop --to "$SERVER_IP:$PORT_ECHO" \
      --conns "$S3_CONNS" --closed --duration-ms 1000 --warmup-ms 200 --size 64)
    rates+=("$(rm_json rate_completed <<<"$o")")
  done
  S3_CAPACITY=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 2p)
  S3_CAPACITY=${S3_CAPACITY%.*}
  bench_log "S3: D's capacity (closed loop, $S3_CONNS connections, 64 B): ${rates[*]} req/s -> $S3_CAPACITY"
  bench_record S3 capacity "{\"capacity_rps\": $S3_CAPACITY, \"samples\": [$(IFS=,; echo "${rates[*]}")]}"
}

bench_write_meta() {
  python3 - "$OUT/meta.json" <<EOF
import json, os, platform, subprocess, sys
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
meta = {
  "command": """$CMDLINE""",
  "started_utc": "$STAMP",
  "rounds": $ROUNDS,
  "quick": bool($QUICK),
  "peers": "$PEERS".split(),
  "skipped_peers": "$SKIPPED_PEERS".split(),
  "scenarios": "$SCENARIOS".split(),
  "kernel": platform.release(),
  "cpu_model": sh("awk -F': ' '/model name/ {print \$2; exit}' /proc/cpuinfo"),
  "cpus": os.cpu_count(),
  "mem_gib": round(int(sh("awk '/MemTotal/ {print \$2}' /proc/meminfo") or 0) / 1048576, 1),
  "os": sh(". /etc/os-release && echo \$PRETTY_NAME"),
  "virtualization": sh("systemd-detect-virt 2>/dev/null || lscpu | awk -F': +' '/Hypervisor vendor/ {print \$2}'"),
  "loadavg_at_start": sh("cat /proc/loadavg"),
  "foreign_cpu_share_at_start": float("${BENCH_FOREIGN_AT_START:-0}"),
  "nofile_limit": $BENCH_NOFILE,
  "placement": {"name": "$PLACEMENT", "phases": "${PHASES[*]}".split(), "load_cpu": $BENCH_CPU_LOAD,
                "proxy_cpu_split": 1, "proxy_workers": 1},
  "versions": {
    "haproxy": sh("haproxy -v | head -1"),
    "nginx": sh("nginx -v 2>&1"),
    "iperf3": sh("iperf3 --version | head -1"),
    "wrk": sh("wrk -v 2>&1 | head -1"),
    "ringmesh_git": sh("git -C $ROOT describe --always --dirty 2>/dev/null"),
  },
  "sizes": {"S1_seconds": $S1_SECONDS, "S2_count": $S2_COUNT, "S2_warmup": $S2_WARMUP, "S3_ms": $S3_MS,
            "S3_conns": $S3_CONNS, "S3_tick_us": $S3_TICK_US, "S4_ms": $S4_MS, "S4_parallel": $S4_PARALLEL,
            "S5_seconds": $S5_SECONDS, "S5_conns": $S5_CONNS, "S6_conns": $S6_CONNS},
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
}
