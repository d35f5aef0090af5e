# shellcheck shell=bash
# scripts/bench scenarios. Each runs the same client program for every
# peer (only the target address differs) and records through bench_run.

# S1 bulk TCP: iperf3, 1 and 4 streams, client -> server.
scenario_S1() {
  local p
  for p in 1 4; do
    bench_run S1 "P$p" iperf3 iperf3 -c "$(bench_host "$PEER_T_IPERF")" -p "$(bench_port "$PEER_T_IPERF")" \
      -t "$S1_SECONDS" -P "$p" -J --connect-timeout 5000
  done
}

# S2 request/response on one warm connection: rm-tcp rr, 64 B and 1 KiB.
scenario_S2() {
  local size
  for size in 64 1024; do
    BENCH_EXTRA="{\"rr_total\": $((S2_COUNT + S2_WARMUP))}"
    bench_run S2 "${size}B" rr "$RM_TCP" --deadline-ms 60000 rr --to "$PEER_T_ECHO" --size "$size" \
      --count "$S2_COUNT" --warmup "$S2_WARMUP" --timeout-ms 5000
  done
}

# S3 open loop at 10/50/80 % of D's capacity, 16 connections, 64 B.
scenario_S3() {
  local pct rate
  [[ -n $S3_CAPACITY ]] || rm_fail "S3 without calibration"
  for pct in $S3_LOADS; do
    rate=$((S3_CAPACITY * pct / 100))
    BENCH_EXTRA="{\"load_pct\": $pct}"
    bench_run S3 "load$pct" openloop "$RM_BENCH" openloop --to "$PEER_T_ECHO" --conns "$S3_CONNS" \
      --rate "$rate" --duration-ms "$S3_MS" --warmup-ms 300 --size 64 --tick-us "$S3_TICK_US" --deadline-ms 30000
  done
}

# S4 a new connection per request: connect, 64 B echo, close; 16 at a time.
scenario_S4() {
  bench_run S4 conn64B cps "$RM_BENCH" cps --to "$PEER_T_ECHO" --parallel "$S4_PARALLEL" \
    --duration-ms "$S4_MS" --size 64 --deadline-ms 30000
}

# S5 HTTP/1.1 keep-alive at saturation: wrk, one thread, 16 connections,
# 128-byte static file from nginx in the server pod.
scenario_S5() {
  bench_run S5 http128B wrk wrk -t1 -c "$S5_CONNS" -d "${S5_SECONDS}s" --latency "http://$PEER_T_HTTP/"
}

# S6 10,000 idle proxied connections (proxies only): RSS before, with the
# connections open and idle (each did one 64 B echo), per connection.
scenario_S6() {
  ((PEER_HAS_PROXY)) || return 0
  local ready=$RM_TMP/hold-ready-$BENCH_PEER-$BENCH_ROUND before loaded pid i log
  rm -f "$ready"
  before=$(bench_rss_kib "${PEER_PIDS[@]}")
  log=$OUT/logs/r${BENCH_ROUND}-${BENCH_PEER}-S6-hold.out
  pid=$(rm_spawn --log "$log" client taskset -c "$BENCH_CPU_LOAD" "$RM_BENCH" hold --to "$PEER_T_ECHO" \
    --count "$S6_CONNS" --parallel 256 --size 64 --hold-ms 60000 --ready-file "$ready" --deadline-ms 90000)
  for ((i = 0; i < 600; i++)); do
    [[ -s $ready ]] && break
    [[ -e /proc/$pid ]] || break
    rm_sleep 0.05
  done
  [[ -s $ready ]] || rm_fail "S6: $BENCH_PEER: $S6_CONNS connections not open after 30 s"
  rm_sleep 1  # let the proxy settle (deferred frees, buffer release)
  loaded=$(bench_rss_kib "${PEER_PIDS[@]}")
  local est
  est=$(nsenter --net="$(rm_pod_netns_path client)" ss -Htn state established "( dport = :$PORT_ECHO )" | wc -l)
  rm_stop "$pid" 10
  BENCH_EXTRA=$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); d.update(rss_idle_kib=int(sys.argv[2]), rss_before_kib=int(sys.argv[3]), rss_loaded_kib=int(sys.argv[4]), upstream_established=int(sys.argv[5])); print(json.dumps(d))' \
    "$ready" "$PEER_RSS_IDLE" "$before" "$loaded" "$est")
  bench_record S6 idle10k "$BENCH_EXTRA"
  BENCH_EXTRA=""
  # wait until the proxy closed its upstream side, so the next scenario or
  # peer starts clean
  for ((i = 0; i < 200; i++)); do
    est=$(nsenter --net="$(rm_pod_netns_path client)" ss -Htn state established "( dport = :$PORT_ECHO )" | wc -l)
    ((est < 16)) && break
    rm_sleep 0.05
  done
}

# ----------------------------------------------------------- self-check ---

# bench_self_check: ringmesh with --delay-us 200 must be slower in S2 than
# without; 3 interleaved rounds of a short S2 (64 B). Exits 1 if the
# harness cannot see the delay (or cannot run ringmesh at all).
bench_self_check() {
  local r v
  bench_log "self-check: S2 64 B, ringmesh io_uring fast path on, --delay-us 0 vs 200, 3 rounds"
  S2_COUNT=3000 S2_WARMUP=200
  for ((r = 1; r <= 3; r++)); do
    for v in 0 200; do
      BENCH_PEER=rm-delay$v BENCH_ROUND=$r PEER_HAS_PROXY=1
      bench_rm_up io_uring on "$v"
      PEER_PIDS=("$_RM_PROXY_PID")
      BENCH_EXTRA="{\"rr_total\": $((S2_COUNT + S2_WARMUP)), \"delay_us\": $v}"
      bench_run S2 64B rr "$RM_TCP" --deadline-ms 60000 rr --to "$BENCH_VIP:$PORT_ECHO" --size 64 \
        --count "$S2_COUNT" --warmup "$S2_WARMUP" --timeout-ms 5000
      bench_rm_down
    done
  done
  python3 "$BENCH_D/report.py" --raw "$RAW" --self-check --min-added-us 100
}
