# shellcheck shell=bash
# scripts/bench peers. peer_up sets, for the scenarios:
#   PEER_T_ECHO PEER_T_IPERF PEER_T_HTTP   where the client connects (IP:PORT)
#   PEER_PIDS        processes whose CPU time and RSS are "the proxy"
#   PEER_HAS_PROXY   0 for D and K
# and peer_down removes every trace of the peer, so the next one measures
# on a clean node (checked: no BPF on the node cgroup outside K and ringmesh).
#
#   D              client -> server pod IP, no proxy (the reference)
#   X              D with the client moved to the proxy CPU (S2 only): what
#                  crossing CPUs costs on this machine. Every proxied round
#                  trip crosses CPUs four times (client->proxy->server and
#                  back), X's round trip twice, D's never.
#   K              D plus bench/bpf/kshortcut.bpf.c: sockops + sk_msg redirect
#                  between the client's and the server's sockets (same-node ceiling)
#   haproxy        HAProxy, client pod netns, 127.0.0.1 listeners; tcp mode,
#                  http mode for S5
#   nginx          nginx, client pod netns, 127.0.0.1 listeners; stream module,
#                  http reverse proxy for S5
#   rm-<io>-<fp>   ringmesh: agent + proxy on the node, client pod enrolled
#                  (fail closed, so a missing proxy fails loudly instead of
#                  going direct), service VIP -> server; io_uring|epoll,
#                  sk_msg fast path on|off
# HAProxy and nginx run inside the client pod's netns; ringmesh's proxy runs
# in the node but opens its listener and upstream sockets inside the client
# pod's netns. So for every proxy the client->proxy leg is loopback in the
# client pod and the proxy->server leg leaves the client pod over its veth.

PEER_T_ECHO="" PEER_T_IPERF="" PEER_T_HTTP=""
PEER_PIDS=()
PEER_HAS_PROXY=0
PEER_CLIENT_CPU=0
PEER_RSS_IDLE=0
BENCH_PEER="" BENCH_ROUND=0
_RM_AGENT_PID="" _RM_PROXY_PID=""
BENCH_PROXY_WRAPPER=()   # e.g. (valgrind --tool=callgrind ...) for --profile
BENCH_PROXY_READY_S=10
BENCH_STOP_S=5
declare -gA _PEER_COUNTERS0=()

MESH_NODE_FILE=""

# bench_assert_no_bpf: nothing attached to the node's cgroups (a previous
# peer cleaned up).
bench_assert_no_bpf() {
  local att
  att=$(bpftool cgroup tree "$(mesh_node_cgroup n1)" 2>/dev/null | awk 'NR > 1 && NF > 1 && $1 ~ /^[0-9]+$/')
  if [[ -n $att ]]; then
    rm_fail "BPF still attached to the node cgroup before peer $BENCH_PEER: $att"
  fi
}

peer_up() {
  local peer=$1 round=$2
  BENCH_PEER=$peer BENCH_ROUND=$round
  PEER_PIDS=() PEER_HAS_PROXY=1 PEER_CLIENT_CPU=$BENCH_CPU_LOAD
  case $peer in
    D | K | X)
      bench_assert_no_bpf
      PEER_HAS_PROXY=0
      PEER_T_ECHO=$SERVER_IP:$PORT_ECHO PEER_T_IPERF=$SERVER_IP:$PORT_IPERF PEER_T_HTTP=$SERVER_IP:$PORT_HTTP
      [[ $peer == X ]] && PEER_CLIENT_CPU=$BENCH_CPU_PROXY
      if [[ $peer == K ]]; then
        mkdir -p "$(rm_node_pindir n1)"
        "$RM_KSHORTCUT" attach --cgroup "$(mesh_node_cgroup n1)" --pin-dir "$(rm_node_pindir n1)/kshortcut" >/dev/null ||
          rm_fail "cannot attach the K shortcut"
      fi
      ;;
    haproxy)
      bench_assert_no_bpf
      _peer_haproxy_conf
      PEER_PIDS=("$(rm_spawn --log "$OUT/logs/haproxy-r$round.log" client taskset -c "$BENCH_CPU_PROXY" \
        prlimit --nofile="$BENCH_NOFILE:$BENCH_NOFILE" -- haproxy -db -f "$RM_TMP/haproxy.cfg")")
      _peer_explicit_targets
      ;;
    nginx)
      bench_assert_no_bpf
      _peer_nginx_conf
      PEER_PIDS=("$(rm_spawn --log "$OUT/logs/nginx-r$round.log" client taskset -c "$BENCH_CPU_PROXY" \
        prlimit --nofile="$BENCH_NOFILE:$BENCH_NOFILE" -- nginx -p "$RM_TMP/px-nginx" -c "$RM_TMP/px-nginx/nginx.conf" \
        -e "$RM_TMP/px-nginx/error.log")")
      _peer_explicit_targets
      ;;
    rm-*)
      bench_assert_no_bpf
      local io=${peer#rm-} fp
      io=${io%-*}
      fp=${peer##*-}
      [[ $io == uring ]] && io=io_uring
      [[ $fp == fp ]] && fp=on || fp=off
      bench_rm_up "$io" "$fp" 0
      PEER_PIDS=("$_RM_PROXY_PID")
      PEER_T_ECHO=$BENCH_VIP:$PORT_ECHO PEER_T_IPERF=$BENCH_VIP:$PORT_IPERF PEER_T_HTTP=$BENCH_VIP:$PORT_HTTP
      _PEER_COUNTERS0=()
      local c
      for c in $_RM_RECORDED_COUNTERS; do _PEER_COUNTERS0[$c]=$(mesh_counter n1 "$c"); done
      ;;
    *) rm_fail "unknown peer $peer" ;;
  esac
  if ((PEER_HAS_PROXY)); then
    sleep 0.3
    PEER_RSS_IDLE=$(bench_rss_kib "${PEER_PIDS[@]}")
    bench_record peer up "{\"rss_idle_kib\": $PEER_RSS_IDLE, \"pids\": $(bench_tree "${PEER_PIDS[@]}" | wc -l)}"
  fi
}

# peer_runs SCENARIO: whether the current peer takes part in it.
peer_runs() {
  case $BENCH_PEER:$1 in
    X:S2) return 0 ;;
    X:*) return 1 ;;
    D:S6 | K:S6) return 1 ;;
  esac
  return 0
}

peer_down() {
  local peer=$1 round=$2
  case $peer in
    K)
      local c
      c=$("$RM_KSHORTCUT" detach --pin-dir "$(rm_node_pindir n1)/kshortcut") || rm_fail "cannot detach the K shortcut"
      bench_record peer down "{\"kshortcut\": $c}"
      if [[ $(rm_json msg_redirected <<<"$c") == 0 ]]; then
        bench_log "warning: K redirected no message; K measured the plain TCP path"
      fi
      ;;
    haproxy | nginx)
      rm_stop "${PEER_PIDS[0]}" 5
      ;;
    rm-*)
      local red msg fp=${peer##*-} c json=""
      local -A delta=()
      for c in $_RM_RECORDED_COUNTERS; do
        delta[$c]=$(($(mesh_counter n1 "$c") - ${_PEER_COUNTERS0[$c]}))
        json+="\"bpf_$c\": ${delta[$c]}, "
      done
      red=${delta[redirected]} msg=${delta[msg_redirected]}
      bench_record peer down "{${json%, }}"
      ((red > 0)) || rm_fail "$peer: the BPF connect hook redirected nothing"
      if [[ $fp == fp ]] && ((msg == 0)); then
        rm_fail "$peer: fast path on but no sk_msg redirect"
      elif [[ $fp == nofp ]] && ((msg != 0)); then
        rm_fail "$peer: fast path off but $msg sk_msg redirects"
      fi
      bench_rm_down
      ;;
  esac
  PEER_PIDS=()
}

_peer_explicit_targets() {
  PEER_T_ECHO=127.0.0.1:$PXPORT_ECHO PEER_T_IPERF=127.0.0.1:$PXPORT_IPERF PEER_T_HTTP=127.0.0.1:$PXPORT_HTTP
  local p
  for p in $PXPORT_ECHO $PXPORT_IPERF $PXPORT_HTTP; do
    rm_wait_port client 127.0.0.1 "$p" 5 || rm_fail "$BENCH_PEER does not listen on 127.0.0.1:$p"
  done
}

# One thread on the proxy CPU (taskset; nbthread 1), tcp mode for the raw
# TCP ports, http mode with keep-alive and server connection reuse for S5.
_peer_haproxy_conf() {
  cat >"$RM_TMP/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $(((BENCH_NOFILE - 100) / 2))
defaults
  mode tcp
  maxconn $(((BENCH_NOFILE - 100) / 2))
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout http-keep-alive 1h
frontend echo
  bind 127.0.0.1:$PXPORT_ECHO
  default_backend echo
backend echo
  server s1 $SERVER_IP:$PORT_ECHO
frontend iperf
  bind 127.0.0.1:$PXPORT_IPERF
  default_backend iperf
backend iperf
  server s1 $SERVER_IP:$PORT_IPERF
frontend http
  mode http
  option http-keep-alive
  bind 127.0.0.1:$PXPORT_HTTP
  default_backend http
backend http
  mode http
  http-reuse always
  server s1 $SERVER_IP:$PORT_HTTP
EOF
}

# One worker process on the proxy CPU; stream module for the raw TCP
# ports, http reverse proxy with upstream keep-alive for S5.
_peer_nginx_conf() {
  local d=$RM_TMP/px-nginx
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
user root;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $BENCH_NOFILE;
events { worker_connections $((BENCH_NOFILE - 100)); }
stream {
  proxy_timeout 1h;
  server { listen 127.0.0.1:$PXPORT_ECHO backlog=65535; proxy_pass $SERVER_IP:$PORT_ECHO; }
  server { listen 127.0.0.1:$PXPORT_IPERF; proxy_pass $SERVER_IP:$PORT_IPERF; }
}
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  upstream origin {
    server $SERVER_IP:$PORT_HTTP;
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 3600s;
  }
  server {
    listen 127.0.0.1:$PXPORT_HTTP backlog=65535;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

# ------------------------------------------------------------ ringmesh ---

# BPF counters recorded per ringmesh peer slot (raw.jsonl "peer down").
_RM_RECORDED_COUNTERS="redirected msg_redirected msg_spliced msg_pass_budget_spent msg_back_from_tcp msg_pass_miss upstream_sockhash_added server_sockhash_added sockhash_skipped_short_route connect_direct"

_bench_rm_nodefile() {
  MESH_NODE_FILE=$RM_TMP/node.yaml
  cat >"$MESH_NODE_FILE" <<EOF
pods:
  - {namespace: bench, name: client, netns: $(rm_pod_netns_path client), ips: [$CLIENT_IP], failMode: closed}
  - {namespace: bench, name: server, netns: $(rm_pod_netns_path server), ips: [$SERVER_IP]}
services:
  - namespace: bench
    name: server
    vips: [$BENCH_VIP]
    ports:
      - {name: echo, port: $PORT_ECHO, targetPort: $PORT_ECHO}
      - {name: iperf, port: $PORT_IPERF, targetPort: $PORT_IPERF}
      - {name: http, port: $PORT_HTTP, targetPort: $PORT_HTTP}
    endpoints: [{ip: $SERVER_IP, pod: bench/server}]
EOF
}

# bench_rm_up IO_BACKEND FASTPATH DELAY_US: agent and proxy (one worker) on
# the proxy CPU; waits for readiness and the listener in the client pod.
bench_rm_up() {
  local io=$1 fp=$2 delay=$3 i
  [[ -x $MESH_PROXY ]] || rm_fail "ringmesh-proxy not built ($MESH_PROXY)"
  [[ -n $MESH_NODE_FILE ]] || _bench_rm_nodefile
  mkdir -p "$(rm_node_pindir n1)"
  rm -f "$(mesh_agent_socket n1)" "$(mesh_status_file n1)" "$(mesh_admin_socket n1)"
  _RM_AGENT_PID=$(rm_spawn --log "$OUT/logs/agent-$BENCH_PEER-r$BENCH_ROUND.log" n1:system \
    taskset -c "$BENCH_CPU_PROXY" "$MESH_AGENT" --pin-dir "$(rm_node_pindir n1)" \
    --cgroup "$(mesh_node_cgroup n1)" --node-file "$MESH_NODE_FILE" \
    --agent-socket "$(mesh_agent_socket n1)" --status-file "$(mesh_status_file n1)" \
    --poll-interval-ms 1000 --fastpath "$fp" ${BENCH_RM_AGENT_ARGS:-})
  for ((i = 0; i < 200; i++)); do
    if [[ -S $(mesh_agent_socket n1) && -f $(mesh_status_file n1) ]] &&
      [[ $(rm_json --default 0 generation <"$(mesh_status_file n1)" 2>/dev/null) != 0 ]]; then
      break
    fi
    [[ -e /proc/$_RM_AGENT_PID ]] || rm_fail "ringmesh-agent exited: $(tail -5 "$OUT/logs/agent-$BENCH_PEER-r$BENCH_ROUND.log")"
    sleep 0.05
  done
  local -a extra=()
  ((delay > 0)) && extra+=(--delay-us "$delay")
  # BENCH_RM_PROXY_ARGS / BENCH_RM_AGENT_ARGS: extra ringmesh-proxy / agent
  # flags for experiments (recorded in their logs)
  [[ -n ${BENCH_RM_PROXY_ARGS:-} ]] && read -r -a _rm_more <<<"$BENCH_RM_PROXY_ARGS" && extra+=("${_rm_more[@]}")
  _RM_PROXY_PID=$(rm_spawn --log "$OUT/logs/proxy-$BENCH_PEER-r$BENCH_ROUND.log" n1:system \
    taskset -c "$BENCH_CPU_PROXY" prlimit --nofile="$BENCH_NOFILE:$BENCH_NOFILE" -- \
    "${BENCH_PROXY_WRAPPER[@]}" "$MESH_PROXY" --workers 1 \
    --io-backend "$io" --agent-socket "$(mesh_agent_socket n1)" --admin-socket "$(mesh_admin_socket n1)" \
    --bpf-pin-dir "$(rm_node_pindir n1)" "${extra[@]}")
  local until=$((SECONDS + BENCH_PROXY_READY_S))
  for ((;;)); do
    if mesh_admin n1 /healthz/ready >/dev/null 2>&1 && rm_wait_port client 127.0.0.1 15001 0 2>/dev/null; then
      break
    fi
    [[ -e /proc/$_RM_PROXY_PID ]] || rm_fail "ringmesh-proxy exited: $(tail -5 "$OUT/logs/proxy-$BENCH_PEER-r$BENCH_ROUND.log")"
    ((SECONDS < until)) || rm_fail "ringmesh-proxy not ready with a listener in the client pod after ${BENCH_PROXY_READY_S} s"
    sleep 0.05
  done
  grep -q "io backend: $io" "$OUT/logs/proxy-$BENCH_PEER-r$BENCH_ROUND.log" ||
    bench_log "warning: proxy log does not say 'io backend: $io'"
}

# bench_rm_down: proxy and agent stopped, everything unpinned (detached).
bench_rm_down() {
  [[ -n $_RM_PROXY_PID ]] && rm_stop "$_RM_PROXY_PID" "$BENCH_STOP_S"
  [[ -n $_RM_AGENT_PID ]] && rm_stop "$_RM_AGENT_PID" 5
  "$MESH_AGENT" --uninstall --pin-dir "$(rm_node_pindir n1)" >>"$OUT/logs/agent-uninstall.log" 2>&1 ||
    rm -rf "$(rm_node_pindir n1)"
  _RM_PROXY_PID="" _RM_AGENT_PID=""
  local i
  for ((i = 0; i < 30; i++)); do
    [[ -z $(bpftool cgroup tree "$(mesh_node_cgroup n1)" 2>/dev/null | awk 'NR > 1 && NF > 1 && $1 ~ /^[0-9]+$/') ]] && return 0
    sleep 0.1
  done
  rm_fail "ringmesh BPF still attached after uninstall"
}
