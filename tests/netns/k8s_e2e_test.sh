#!/usr/bin/env bash
# The Kubernetes path end to end: a fake API server (the real wire format,
# tests/agent/k8s/fake-apiserver) describes a labelled namespace with a
# client pod and a Service with two backend pods; the agent (--source
# kubernetes) syncs from it and finds each pod's netns through the kubelet's
# cgroupfs layout; the client's connections to the ClusterIP go through the
# proxy; an EndpointSlice change is followed within 1 s; enrollment follows
# the pod and namespace labels.
#
# Topology (node n1): pods client, b1, b2, b3 (namespace shop). Each pod also
# has a kubelet-style cgroup <node cgroup>/kubepods/besteffort/pod<uid>/ with
# a "pause" process (sleep, inside the pod's netns) in sandbox/ and the
# pod's programs in app/. The fake API server and the agent run in
# n1:system and talk over 127.0.0.1 in the node's netns.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/mesh.sh"

rm_init k8s_e2e
mesh_init
FAKE_API=$RINGMESH_BUILD_DIR/tests/agent/k8s/fake-apiserver
[[ -x $FAKE_API ]] || rm_fail "not built: $FAKE_API (ninja fake-apiserver)"

rm_node n1
PODS=(client b1 b2 b3)
for p in "${PODS[@]}"; do rm_pod n1 "$p"; done
NODE_CG=$(mesh_node_cgroup n1)
VIP=198.18.200.10
declare -A POD_UID=()
for p in "${PODS[@]}"; do POD_UID[$p]=$(cat /proc/sys/kernel/random/uuid); done

# ------------------------------------------------ kubelet-style pods ---

# pod_cg POD: the pod's cgroup as the kubelet (cgroupfs driver, QoS
# BestEffort, default --cgroup-root) lays it out, under the node's cgroup.
# Teardown kills everything in the run's cgroup and removes these
# directories with the rest of the run's cgroup tree (deepest first).
pod_cg() { printf '%s/kubepods/besteffort/pod%s\n' "$NODE_CG" "${POD_UID[$1]}"; }

# move_to PID CGROUP_DIR: moves a process spawned by rm_spawn (so recorded,
# stopped and leak-checked by the harness) into a kubelet-layout cgroup.
move_to() {
  echo "$1" >"$2/cgroup.procs" || rm_fail "cannot move pid $1 into $2"
  grep -qxF "0::${2#"$RM_CG2"}" "/proc/$1/cgroup" || rm_fail "pid $1 is not in $2"
}

# k8s_exec POD CMD...: CMD in the pod's netns and its app/ container cgroup,
# in the foreground (like rm_exec, which uses the harness's pods/POD cgroup).
k8s_exec() {
  local pod=$1 ns
  shift
  ns=$(rm_pod_netns_path "$pod")
  (_rm_close_out && echo "$BASHPID" >"$(pod_cg "$pod")/app/cgroup.procs" && exec nsenter --net="$ns" -- "$@")
}

# start_pod POD: the pod's kubelet cgroup with its sandbox's pause process
# (the oldest process of the pod, holding its netns: what the agent's
# CgroupPodLocator picks) in sandbox/, and for a backend its server in app/.
start_pod() {
  local p=$1 ip pid
  mkdir -p "$(pod_cg "$p")/sandbox" "$(pod_cg "$p")/app"
  _rm_record_cgroup "$(pod_cg "$p")"
  move_to "$(rm_spawn "$p" sleep 600)" "$(pod_cg "$p")/sandbox"
  if [[ $p == b* ]]; then
    ip=$(rm_pod_ip "$p")
    pid=$(rm_spawn "$p" "$RM_TCP" --deadline-ms 600000 serve --listen "$ip:8080" --tag "$p")
    move_to "$pid" "$(pod_cg "$p")/app"
    rm_wait_port "$p" "$ip" 8080 5
  fi
}
# b3 is in the API from the start but its sandbox comes later (a pod just
# scheduled, see case late_sandbox_located).
for p in client b1 b2; do start_pod "$p"; done

# -------------------------------------------------- fake API server ---

STATE=$RM_TMP/api-state.json
APPLIED=$RM_TMP/api-applied.json
serial=0
# write_state NS_MODE CLIENT_MODE ENDPOINT_POD...: the whole API world.
# NS_MODE/CLIENT_MODE: value of the ringmesh.io/mode label of namespace shop
# and pod client ("" = no label). The EndpointSlice of web lists the given
# backends, ready.
write_state() {
  local ns_mode=$1 client_mode=$2
  shift 2
  serial=$((serial + 1))
  local ns_labels='{}' pods="" eps="" p labels sep=""
  [[ -z $ns_mode ]] || ns_labels="{\"ringmesh.io/mode\": \"$ns_mode\"}"
  for p in "${PODS[@]}"; do
    if [[ $p == client ]]; then
      labels="{\"app\": \"client\"${client_mode:+, \"ringmesh.io/mode\": \"$client_mode\"}}"
    else
      labels='{"app": "web"}'
    fi
    pods+="$sep    {\"namespace\": \"shop\", \"name\": \"$p\", \"uid\": \"${POD_UID[$p]}\", \"node\": \"n1\","
    pods+=" \"ip\": \"$(rm_pod_ip "$p")\", \"labels\": $labels, \"qosClass\": \"BestEffort\"}"
    sep=$',\n'
  done
  sep=""
  for p in "$@"; do
    eps+="$sep{\"ip\": \"$(rm_pod_ip "$p")\", \"ready\": true, \"pod\": \"$p\"}"
    sep=", "
  done
  cat >"$STATE.tmp" <<JSON
{"serial": $serial,
 "namespaces": [{"name": "shop", "labels": $ns_labels}, {"name": "default"}],
 "pods": [
$pods,
    {"namespace": "shop", "name": "elsewhere", "uid": "uid-elsewhere", "node": "n2", "ip": "198.18.2.10"}],
 "services": [{"namespace": "shop", "name": "web", "clusterIP": "$VIP",
               "ports": [{"name": "tcp-echo", "port": 80, "targetPort": 8080}]}],
 "endpointslices": [{"namespace": "shop", "name": "web-7xk2p", "service": "web",
                     "ports": [{"name": "tcp-echo", "port": 8080}],
                     "endpoints": [$eps]}]}
JSON
  mv "$STATE.tmp" "$STATE"
}

# wait_applied: waits until the fake API server has emitted the events of
# the last write_state; prints the time it did (unix ns).
wait_applied() {
  local i
  for ((i = 0; i < 100; i++)); do
    # {"changes":1,"resourceVersion":1012,"serial":3,"unix_ns":...}
    if [[ -s $APPLIED && $(<"$APPLIED") =~ \"serial\":$serial,\"unix_ns\":([0-9]+) ]]; then
      printf '%s\n' "${BASH_REMATCH[1]}"
      return 0
    fi
    sleep 0.02
  done
  rm_fail "fake API server did not apply state serial $serial"
}

write_state enabled "" b1 b2
# The agent authenticates with a service-account token file, as in a pod.
TOKEN_FILE=$RM_TMP/token
printf 'e2e-%s\n' "$RM_ID" >"$TOKEN_FILE"
api=$(rm_spawn n1:system "$FAKE_API" --state "$STATE" --ready-file "$RM_TMP/api.port" --applied-file "$APPLIED" \
  --token "e2e-$RM_ID" --max-runtime-s 600)
for ((i = 0; i < 100; i++)); do
  [[ -s $RM_TMP/api.port ]] && break
  [[ -e /proc/$api ]] || break
  sleep 0.05
done
[[ -s $RM_TMP/api.port ]] || rm_fail "fake API server did not start: $(cat "$(rm_spawn_log "$api")")"
API_URL=http://127.0.0.1:$(cat "$RM_TMP/api.port")
rm_log "fake API server at $API_URL (in the netns of n1)"

# ------------------------------------------------- agent and proxy ---

status() { rm_json "$1" <"$(mesh_status_file n1)"; }
status_is() { [[ -f $(mesh_status_file n1) && $(status "$1") == "$2" ]]; }
agent_ready() { status_is source_health synced && status_is enrolled_pods 3 && ! status_is generation 0; }

# The agent's defaults otherwise, as in the DaemonSet (source poll 250 ms).
agent=$(rm_spawn n1:system "$MESH_AGENT" --source kubernetes --api-server "$API_URL" --token-file "$TOKEN_FILE" \
  --node-name n1 \
  --cgroup-root "$NODE_CG" --cgroup-driver cgroupfs \
  --pin-dir "$(rm_node_pindir n1)" --cgroup "$NODE_CG" \
  --agent-socket "$(mesh_agent_socket n1)" --status-file "$(mesh_status_file n1)")
_MESH_AGENT_PID[n1]=$agent
for ((i = 0; i < 200; i++)); do
  agent_ready 2>/dev/null && break
  [[ -e /proc/$agent ]] || break
  sleep 0.05
done
agent_ready 2>/dev/null || rm_fail "agent did not sync 3 enrolled pods from the API: $(cat "$(mesh_status_file n1)" 2>/dev/null)"

rm_case late_sandbox_located
# b3 is enrolled (namespace label) but has no cgroup yet: left out and
# retried on every poll, until its sandbox appears.
grep -q "pod shop/b3: not enrolled yet: no cgroup yet" "$(rm_spawn_log "$agent")" ||
  rm_fail "agent log does not say b3 is waiting for its cgroup"
rm_sleep 0.3
rm_assert_eq "$(status enrolled_pods)" 3 "enrolled pods while b3 has no sandbox"
t_start=$(date +%s%N)
start_pod b3
mesh_wait_for "b3 located and enrolled" 5 status_is enrolled_pods 4
late_ms=$((($(date +%s%N) - t_start) / 1000000))
rm_assert_between "$late_ms" 0 1500 "ms from b3's sandbox start until enrolled (incl. its server start)"
rm_pass late_sandbox_located "enrolled ${late_ms} ms after its sandbox started"
mesh_start_proxy n1
proxy_has_generation() { [[ $(mesh_admin n1 /config_dump | tr -d '\n' | rm_json generation) == "$(status generation)" ]]; }
mesh_wait_for "proxy at the agent's generation" 5 proxy_has_generation
for p in "${PODS[@]}"; do rm_wait_port "$p" 127.0.0.1 15001 5 || rm_fail "no proxy listener in $p"; done

counter() { mesh_counter n1 "$1"; }
# Connections the mesh took: through the proxy (redirected) or, once a route
# of local enrolled pods proves short, straight to an endpoint (socket LB).
meshed() { echo $(($(counter redirected) + $(counter connect_direct))); }
# web_endpoints: the ready endpoints the proxy holds for shop/web port 80,
# sorted ("198.18.1.11 198.18.1.12").
web_endpoints() {
  mesh_ctl n1 -o json services | python3 -c 'import json, sys
eps = [e["ip"] for s in json.load(sys.stdin) if s["namespace"] == "shop" and s["name"] == "web" and s["port"] == 80
       for e in s.get("endpoints", []) if e.get("ready", True)]
print(" ".join(sorted(eps)))'
}
# tag COUNT-JSON NAME: connections answered by backend NAME (0 if none).
tag() { rm_json --default 0 "tags.$2" <<<"$1"; }

rm_case agent_found_pods_by_cgroup
# The agent found each pod's netns from its UID alone (cgroup -> oldest
# process -> /proc/<pid>/ns/net): the netns cookie it enrolled under each
# pod's name is the cookie of that pod's own netns. The pod of another node
# is not there.
netns_cookie() {  # POD: SO_NETNS_COOKIE of a socket made in the pod's netns
  k8s_exec "$1" python3 -c 'import socket, struct
s = socket.socket()
print(struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, 71, 8))[0])'
}
wl=$(mesh_ctl n1 -o json workloads)
for p in "${PODS[@]}"; do
  got=$(python3 -c 'import json, sys
w = [x for x in json.loads(sys.argv[1]) if x["namespace"] == "shop" and x["name"] == sys.argv[2]]
print("%s %s %s" % (w[0]["netns_cookie"], w[0]["state"], w[0]["datapath"]) if w else "missing")' "$wl" "$p")
  rm_assert_eq "$got" "$(netns_cookie "$p") listening enrolled, fail-open" "workload $p (netns cookie, state, datapath)"
done
rm_assert_eq "$(python3 -c 'import json, sys; print(len(json.loads(sys.argv[1])))' "$wl")" 4 "workloads on n1"
if grep "not enrolled yet" "$(rm_spawn_log "$agent")" | grep -v "pod shop/b3:" >&2; then
  rm_fail "agent could not locate a pod that was there from the start"
fi
rm_pass agent_found_pods_by_cgroup "$(status enrolled_pods) pods enrolled, generation $(status generation)"

rm_case clusterip_balanced_via_proxy
rm_assert_eq "$(web_endpoints)" "$(rm_pod_ip b1) $(rm_pod_ip b2)" "proxy's ready endpoints of shop/web:80"
red0=$(counter redirected) mesh0=$(meshed) conn0=$(mesh_metric n1 ringmesh_proxy_connections_total)
fail0=$(mesh_metric n1 ringmesh_proxy_upstream_connect_failures_total)
out=$(k8s_exec client "$RM_TCP" connect --to "$VIP:80" --count 100 --parallel 4 --timeout-ms 3000)
rm_assert_eq "$(rm_json ok <<<"$out")" 100 "connections ok ($out)"
# Both endpoints in rotation, nothing else. The split itself is the load
# balancer's business and not checked tightly: P2C over peak-EWMA latency
# avoids an endpoint after one slow connect for as long as it gets no new
# sample (splits of 3/97 seen), while an endpoint without a sample yet
# always wins, so each one gets at least a connection.
rm_assert_eq "$(($(tag "$out" b1) + $(tag "$out" b2)))" 100 "connections to b1 + b2 ($out)"
rm_assert_between "$(tag "$out" b1)" 1 99 "connections to b1 ($out)"
rm_assert_between "$(tag "$out" b2)" 1 99 "connections to b2 ($out)"
rm_assert_eq "$(tag "$out" b3)" 0 "connections to b3, not in the EndpointSlice"
rm_assert_eq "$(($(meshed) - mesh0))" 100 "BPF redirected + direct delta"
rm_assert_eq "$(($(mesh_metric n1 ringmesh_proxy_connections_total) - conn0))" "$(($(counter redirected) - red0))" \
  "proxy connections_total delta (every redirected connection)"
rm_assert_eq "$(($(mesh_metric n1 ringmesh_proxy_upstream_connect_failures_total) - fail0))" 0 "upstream failures"
rm_pass clusterip_balanced_via_proxy "b1 $(tag "$out" b1), b2 $(tag "$out" b2); $((100 - $(counter redirected) + red0)) straight to an endpoint"

rm_case endpointslice_change_followed_within_1s
# A batch of 8 connections every 50 ms; after the third the EndpointSlice
# changes (b1 removed, b3 added). Done at the first batch that reaches b3
# (only in the new slice) and not b1 (only in the old one), all ok. The
# time is measured from when the fake API server emitted the change to the
# end of that batch (an upper bound; the end of the batch before it is the
# lower bound).
gen0=$(status generation)
follow_ms="" before_ms="" batches=0 changed_at=3 prev_end=0
for ((i = 0; i < 80; i++)); do
  if ((i == changed_at)); then
    write_state enabled "" b2 b3
  fi
  tb=$(date +%s%N)
  out=$(k8s_exec client "$RM_TCP" connect --to "$VIP:80" --count 8 --parallel 8 --timeout-ms 1000 --allow-fail)
  te=$(date +%s%N)
  [[ $out =~ \"ok\":8[,}] ]] || rm_fail "a batch of 8 connections had failures: $out"
  if ((i < changed_at)); then
    [[ ! $out =~ \"b3\": ]] || rm_fail "b3 reached before the EndpointSlice change: $out"
  elif [[ $out =~ \"b3\": && ! $out =~ \"b1\": ]]; then
    batches=$((i - changed_at + 1))
    break
  fi
  prev_end=$te
  left=$((50 - (te - tb) / 1000000))
  ((left <= 0)) || sleep "0.$(printf '%03d' "$left")"
done
((batches > 0)) || rm_fail "connections still not only on b2/b3 4 s after the EndpointSlice change: $out"
t0=$(wait_applied)
follow_ms=$(((te - t0) / 1000000)) before_ms=$(((prev_end - t0) / 1000000))
gen1=$(status generation)
((gen1 > gen0)) || rm_fail "agent generation did not advance ($gen0 -> $gen1)"
agent_ms=$((gen1 - t0 / 1000000))  # generations are the agent's unix ms (or +1)
rm_log "EndpointSlice change: agent generation after ${agent_ms} ms; client only on b2/b3 after ${follow_ms} ms" \
  "(batch $batches after the change; the one before ended at ${before_ms} ms): $out"
rm_assert_between "$follow_ms" 0 1000 "ms from the API change until the client reached only b2/b3"
out=$(k8s_exec client "$RM_TCP" connect --to "$VIP:80" --count 100 --parallel 4 --timeout-ms 3000)
rm_assert_eq "$(rm_json ok <<<"$out")" 100 "connections ok after the change ($out)"
rm_assert_eq "$(tag "$out" b1)" 0 "connections to the removed b1"
rm_assert_eq "$(($(tag "$out" b2) + $(tag "$out" b3)))" 100 "connections to b2 + b3 ($out)"
rm_assert_between "$(tag "$out" b2)" 1 99 "connections to b2 ($out)"
rm_assert_between "$(tag "$out" b3)" 1 99 "connections to b3 ($out)"
rm_assert_eq "$(web_endpoints)" "$(rm_pod_ip b2) $(rm_pod_ip b3)" "proxy's ready endpoints of shop/web:80"
rm_pass endpointslice_change_followed_within_1s \
  "followed in ${follow_ms} ms, agent applied after ${agent_ms} ms; then b2 $(tag "$out" b2), b3 $(tag "$out" b3)"

rm_case status_synced
st=$(mesh_ctl n1 -o json status) || rm_fail "ringmeshctl status not healthy: $st"
rm_assert_eq "$(rm_json agent.source_health <<<"$st")" synced "source_health"
rm_assert_eq "$(rm_json healthy <<<"$st")" true "healthy"
grep -qF "kubernetes $API_URL" <<<"$st" || rm_fail "status does not name the kubernetes source: $st"
rm_assert_eq "$(rm_json agent.enrolled_pods <<<"$st")" 4 "enrolled pods"
rm_pass status_synced

# not_redirected N: the client's next N connections (to b2 directly: with no
# proxy there is no ClusterIP) go direct. The agent's own connects to the
# API server also start in the node's (unenrolled) netns and count as
# bypass_not_enrolled, so a watch reconnect may add one or two.
not_redirected() {
  local n=$1 red0 byp0 out
  red0=$(counter redirected) byp0=$(counter bypass_not_enrolled)
  out=$(k8s_exec client "$RM_TCP" connect --to "$(rm_pod_ip b2):8080" --count "$n" --parallel 4 --timeout-ms 3000)
  rm_assert_eq "$(rm_json ok <<<"$out")" "$n" "direct connections ok"
  rm_assert_eq "$(tag "$out" b2)" "$n" "answered by b2"
  rm_assert_eq "$(($(counter redirected) - red0))" 0 "redirected delta"
  rm_assert_between "$(($(counter bypass_not_enrolled) - byp0))" "$n" "$((n + 2))" "bypass_not_enrolled delta"
}
# redirected_again N: after re-enrollment the proxy listens in the client
# again and N connections to the ClusterIP are redirected.
redirected_again() {
  local n=$1 red0 out
  rm_wait_port client 127.0.0.1 15001 5 || rm_fail "no proxy listener in client after re-enrollment"
  red0=$(meshed)
  out=$(k8s_exec client "$RM_TCP" connect --to "$VIP:80" --count "$n" --parallel 4 --timeout-ms 3000)
  rm_assert_eq "$(rm_json ok <<<"$out")" "$n" "connections via the ClusterIP ok"
  rm_assert_eq "$(tag "$out" b1)" 0 "connections to b1"
  rm_assert_eq "$(($(meshed) - red0))" "$n" "redirected + direct delta"
}

rm_case pod_label_disabled_opts_out
write_state enabled disabled b2 b3
wait_applied >/dev/null
mesh_wait_for "client unenrolled (3 pods enrolled)" 5 status_is enrolled_pods 3
not_redirected 20
write_state enabled "" b2 b3
wait_applied >/dev/null
mesh_wait_for "client enrolled again" 5 status_is enrolled_pods 4
redirected_again 20
rm_pass pod_label_disabled_opts_out

rm_case namespace_unlabelled_unenrolls
write_state "" "" b2 b3
wait_applied >/dev/null
mesh_wait_for "namespace shop unenrolled (0 pods enrolled)" 5 status_is enrolled_pods 0
not_redirected 20
write_state enabled "" b2 b3
wait_applied >/dev/null
mesh_wait_for "namespace shop enrolled again" 5 status_is enrolled_pods 4
redirected_again 20
rm_pass namespace_unlabelled_unenrolls

rm_case still_synced_at_end
mesh_ctl n1 -o json status >/dev/null || rm_fail "ringmeshctl status: $(mesh_ctl n1 status 2>&1)"
rm_assert_eq "$(status last_error)" "" "agent last_error"
rm_pass still_synced_at_end

# The API server goes away: the last state keeps serving, and ringmeshctl
# status says the source is not synced (and exits non-zero).
rm_case api_server_down_reported_last_state_serves
rm_stop "$api" 10
source_down() { ! mesh_ctl n1 status >"$RM_TMP/status.txt" 2>&1 && grep -q "source:" "$RM_TMP/status.txt"; }
mesh_wait_for "ringmeshctl status reports the API server down" 10 source_down
rm_log "ringmeshctl status: $(grep 'source:' "$RM_TMP/status.txt")"
red0=$(meshed)
out=$(k8s_exec client "$RM_TCP" connect --to "$VIP:80" --count 20 --parallel 4 --timeout-ms 3000)
rm_assert_eq "$(rm_json ok <<<"$out")" 20 "connections via the ClusterIP with the API server down"
rm_assert_eq "$(($(meshed) - red0))" 20 "redirected + direct delta"
rm_pass api_server_down_reported_last_state_serves

# The processes stop cleanly on SIGTERM; under the ASan build this is where
# LeakSanitizer and UBSan would speak (their logs are gone after teardown).
rm_case clean_shutdown
for pid in "$(mesh_proxy_pid n1)" "$agent" "$api"; do
  rm_stop "$pid" 10
  if grep -E "ERROR: (Address|Leak|Thread)Sanitizer|runtime error:" "$(rm_spawn_log "$pid")" >&2; then
    rm_fail "sanitizer report in the log of pid $pid ($(rm_spawn_log "$pid"))"
  fi
done
grep -q "agent stopped" "$(rm_spawn_log "$agent")" || rm_fail "agent did not stop cleanly"
grep -q "fake-apiserver: stopped" "$(rm_spawn_log "$api")" || rm_fail "fake API server did not stop cleanly"
rm_pass clean_shutdown
