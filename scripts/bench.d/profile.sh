# shellcheck shell=bash
# scripts/bench --profile: where ringmesh-proxy spends its time, on the same
# cluster and placement as the benchmark. Writes to $OUT:
#   perfstat-<peer>-<load>.txt   perf stat: task clock, context switches and
#                                every syscall the proxy made, per round trip
#                                or per connection
#   perf-<peer>-<load>.txt       perf record -e cpu-clock -g: top symbols
#   callgrind-<peer>-<load>.txt  callgrind_annotate of a short run, only with
#                                PROFILE_CALLGRIND=1 (see below why it is off)
# Loads: rr = S2 64 B (PROFILE_RR round trips), cps = S4 for 1.5 s, bulk =
# S1 one stream for 3 s (per-unit figures for bulk are per GB).

PROFILE_RR=${PROFILE_RR:-20000}

_profile_load() {  # rr|cps|bulk [small]
  if [[ $1 == bulk ]]; then
    rm_exec client taskset -c "$BENCH_CPU_LOAD" iperf3 -c "$BENCH_VIP" -p "$PORT_IPERF" -t "${2:-3}" -P 1 -J
  elif [[ $1 == rr ]]; then
    rm_exec client taskset -c "$BENCH_CPU_LOAD" "$RM_TCP" --deadline-ms 120000 rr --to "$BENCH_VIP:$PORT_ECHO" \
      --size 64 --count "${2:-$PROFILE_RR}" --warmup 200 --timeout-ms 5000
  else
    rm_exec client taskset -c "$BENCH_CPU_LOAD" "$RM_BENCH" cps --to "$BENCH_VIP:$PORT_ECHO" --parallel 16 \
      --duration-ms "${2:-1500}" --warmup-ms 0 --size 64 --deadline-ms 60000
  fi
}

bench_profile() {
  local peer io fp load out pid n
  for peer in rm-uring-fp rm-epoll-fp; do
    io=${peer#rm-}
    io=${io%-*}
    [[ $io == uring ]] && io=io_uring
    BENCH_PEER=$peer BENCH_ROUND=0
    bench_rm_up "$io" on 0
    pid=$_RM_PROXY_PID
    for load in rr cps bulk; do
      # perf stat: software events and syscall counts of the proxy process
      out=$OUT/perfstat-$peer-$load.txt
      perf stat -e task-clock,context-switches,cpu-migrations,page-faults -e 'syscalls:sys_enter_*' \
        -p "$pid" -o "$out.raw" &
      local ps=$!
      sleep 1
      _profile_load "$load" >"$OUT/load-$peer-$load.json"
      kill -INT "$ps"
      wait "$ps" 2>/dev/null || true
      local what
      case $load in
        rr) n=$((PROFILE_RR + 200)) what="round trip" ;;
        cps) n=$(rm_json ok <"$OUT/load-$peer-$load.json") what=connection ;;
        bulk)
          n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"] / 1e9)' \
            "$OUT/load-$peer-$load.json")
          what=GB
          ;;
      esac
      awk -v n="$n" -v what="$what" '
        /^#/ || NF < 2 { next }
        { v = $1; gsub(",", "", v); if (v !~ /^[0-9.]+$/) next
          name = ($2 == "msec") ? $3 : $2
          if (name == "task-clock") v = v * 1000   # msec -> usec
          if (v > 0) printf "%-45s %14s  %10.3f per %s%s\n", name, $1, v / n, what, (name == "task-clock" ? " (us)" : "") }' \
        "$out.raw" | sort -k3 -n -r >"$out"
      # perf record: where the CPU time goes (software clock sampling; this
      # machine has no hardware PMU)
      perf record -q -e cpu-clock -F 4999 -g -p "$pid" -o "$OUT/perf-$peer-$load.data" 2>/dev/null &
      ps=$!
      sleep 1
      _profile_load "$load" >/dev/null
      kill -INT "$ps"
      wait "$ps" 2>/dev/null || true
      perf report -i "$OUT/perf-$peer-$load.data" --stdio --no-children --percent-limit 0.7 \
        --sort symbol -g none 2>/dev/null | grep -v '^$' >"$OUT/perf-$peer-$load.txt" || true
      perf report -i "$OUT/perf-$peer-$load.data" --stdio --children --percent-limit 3 \
        --sort symbol -g none 2>/dev/null | grep -v '^$' >"$OUT/perf-children-$peer-$load.txt" || true
    done
    bench_rm_down
  done

  # callgrind: instruction counts of the proxy's own code on a short run.
  # Off unless PROFILE_CALLGRIND=1: valgrind 3.19 (Debian 12) runs neither
  # backend -- it does not model io_uring's asynchronous completions (the
  # io_uring loop never wakes up) and does not know epoll_pwait2 (syscall
  # 441, ENOSYS; the epoll loop then spins without a fallback).
  if [[ ${PROFILE_CALLGRIND:-0} == 1 ]] && command -v valgrind >/dev/null; then
    for peer in rm-epoll-fp; do
      io=${peer#rm-}
      io=${io%-*}
      [[ $io == uring ]] && io=io_uring
      for load in rr cps; do
        BENCH_PEER=$peer BENCH_ROUND=0
        BENCH_PROXY_WRAPPER=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-$peer-$load.out")
        BENCH_PROXY_READY_S=60
        bench_rm_up "$io" on 0
        _profile_load "$load" "$([[ $load == rr ]] && echo 2000 || echo 1000)" >"$OUT/callgrind-load-$peer-$load.json" || true
        BENCH_STOP_S=30
        bench_rm_down
        BENCH_PROXY_WRAPPER=() BENCH_PROXY_READY_S=10 BENCH_STOP_S=5
        callgrind_annotate --inclusive=no "$OUT/callgrind-$peer-$load.out" 2>/dev/null | head -60 \
          >"$OUT/callgrind-$peer-$load.txt" || true
        callgrind_annotate --inclusive=yes "$OUT/callgrind-$peer-$load.out" 2>/dev/null | head -60 \
          >"$OUT/callgrind-incl-$peer-$load.txt" || true
      done
    done
  fi
  bench_log "profile written to $OUT"
}
