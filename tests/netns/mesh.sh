# shellcheck shell=bash
# mesh.sh: ringmesh on harness nodes (source after lib.sh). Starts the agent
# and the proxy of a node in its system cgroup, with the node's pin dir,
# sockets and status file in the run's temp dir, and wraps ringmeshctl.
#
#   mesh_init                     # finds the binaries in RINGMESH_BUILD_DIR
#   mesh_start_agent n1 "$nodefile" [agent flags...]
#   mesh_start_proxy n1 [proxy flags...]      # e.g. --io-backend=epoll
#   mesh_ctl n1 -o json bpf
#
# BPF attaches at the node's cgroup (parent of pods/ and system/), as it
# would at kubepods in a cluster: the proxy's accepted sockets must be seen
# by sockops (see docs/architecture.md, "Data flow").

MESH_AGENT=""
MESH_PROXY=""
MESH_CTL=""
declare -gA _MESH_AGENT_PID=()
declare -gA _MESH_PROXY_PID=()

mesh_init() {
  local b=${RINGMESH_BUILD_DIR:?RINGMESH_BUILD_DIR not set}
  MESH_AGENT=$b/userspace/agent/ringmesh-agent
  MESH_PROXY=$b/userspace/proxy/ringmesh-proxy
  MESH_CTL=$b/cli/ringmeshctl
  local x
  for x in "$MESH_AGENT" "$MESH_CTL"; do
    [[ -x $x ]] || rm_fail "not built: $x"
  done
}

mesh_node_cgroup() { dirname "$(rm_node_cgroup "$1")"; }
mesh_agent_socket() { printf '%s/%s-agent.sock\n' "$RM_TMP" "$1"; }
mesh_admin_socket() { printf '%s/%s-proxy-admin.sock\n' "$RM_TMP" "$1"; }
mesh_status_file() { printf '%s/%s-agent-status.json\n' "$RM_TMP" "$1"; }
mesh_agent_pid() { printf '%s\n' "${_MESH_AGENT_PID[$1]:-}"; }
mesh_proxy_pid() { printf '%s\n' "${_MESH_PROXY_PID[$1]:-}"; }

# mesh_start_agent NODE NODEFILE [FLAGS...]: waits until the datapath is
# pinned and the agent has published a generation.
mesh_start_agent() {
  local node=$1 nodefile=$2
  shift 2
  local pid
  pid=$(rm_spawn "$node:system" "$MESH_AGENT" --pin-dir "$(rm_node_pindir "$node")" \
    --cgroup "$(mesh_node_cgroup "$node")" --node-file "$nodefile" \
    --agent-socket "$(mesh_agent_socket "$node")" --status-file "$(mesh_status_file "$node")" \
    --poll-interval-ms 100 "$@")
  _MESH_AGENT_PID[$node]=$pid
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -S $(mesh_agent_socket "$node") && -f $(mesh_status_file "$node") ]] &&
      [[ $(rm_json generation <"$(mesh_status_file "$node")") != 0 ]]; then
      return 0
    fi
    [[ -e /proc/$pid ]] || break
    sleep 0.05
  done
  cat "$(rm_spawn_log "$pid")" >&2
  rm_fail "agent on $node did not come up"
}

# mesh_start_proxy NODE [FLAGS...]: waits until /healthz/ready answers 200.
mesh_start_proxy() {
  local node=$1
  shift
  [[ -x $MESH_PROXY ]] || rm_fail "not built: $MESH_PROXY"
  local pid
  pid=$(rm_spawn "$node:system" prlimit --nofile=16384:16384 -- "$MESH_PROXY" --agent-socket "$(mesh_agent_socket "$node")" \
    --admin-socket "$(mesh_admin_socket "$node")" --bpf-pin-dir "$(rm_node_pindir "$node")" "$@")
  _MESH_PROXY_PID[$node]=$pid
  local i
  for ((i = 0; i < 200; i++)); do
    if mesh_admin "$node" /healthz/ready >/dev/null 2>&1; then
      return 0
    fi
    [[ -e /proc/$pid ]] || break
    sleep 0.05
  done
  cat "$(rm_spawn_log "$pid")" >&2
  rm_fail "proxy on $node did not become ready"
}

# mesh_ctl NODE ARGS...: ringmeshctl pointed at that node.
mesh_ctl() {
  local node=$1
  shift
  "$MESH_CTL" --pin-dir "$(rm_node_pindir "$node")" --proxy-admin "$(mesh_admin_socket "$node")" \
    --agent-status "$(mesh_status_file "$node")" "$@"
}

# mesh_counter NODE NAME: one BPF counter of the node.
mesh_counter() {
  mesh_ctl "$1" -o json bpf | rm_json "counters.$2"
}

# mesh_admin NODE PATH: GET from the proxy admin socket (body on stdout).
mesh_admin() {
  curl -sS --fail --max-time 5 --unix-socket "$(mesh_admin_socket "$1")" "http://ringmesh$2"
}

# mesh_metric NODE NAME [LABEL_FILTER]: sum of a Prometheus metric's samples
# (optionally only lines containing LABEL_FILTER).
mesh_metric() {
  mesh_admin "$1" /metrics | awk -v n="$2" -v f="${3:-}" '
    $1 ~ "^" n "({|$)" && (f == "" || index($0, f)) { s += $NF } END { printf "%d\n", s }'
}

# mesh_fd_count PID: open descriptors of a process.
mesh_fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# mesh_map_entries NODE MAP: entries in one pinned map.
mesh_map_entries() {
  mesh_ctl "$1" -o json bpf | python3 -c '
import json, sys
d = json.load(sys.stdin)
print([m["entries"] for m in d["maps"] if m["name"] == sys.argv[1]][0])' "$2"
}

# mesh_wait_for DESCRIPTION TIMEOUT_S CMD...: polls CMD until it succeeds.
mesh_wait_for() {
  local what=$1 timeout=$2 i
  shift 2
  for ((i = 0; i < timeout * 20; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  rm_fail "timed out after ${timeout}s waiting for: $what"
}
