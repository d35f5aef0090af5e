# shellcheck shell=bash
# lib.sh: the network-namespace test harness of ringmesh.
#
# A test builds nodes (netns + cgroup subtree + bpffs pin dir) and pods
# (netns + veth to the node + cgroup leaf), runs commands inside them and
# leaves nothing behind: everything made carries the run id, and teardown
# runs from traps on EXIT, INT, TERM and HUP, then checks for leaks.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   rm_init my_test                      # root, cgroup2 and bpffs, or exit 77
#   rm_node n1; rm_node n2; rm_bridge    # nodes 198.19.0.k, pods 198.18.k.0/24
#   rm_pod n1 a1; rm_pod n2 b1 198.18.2.20
#   rm_spawn b1 "$RM_TCP" serve --listen "$(rm_pod_ip b1):8080" --tag b1
#   rm_wait_port b1 "$(rm_pod_ip b1)" 8080 5
#   out=$(rm_exec a1 "$RM_TCP" connect --to "$(rm_pod_ip b1):8080" --count 10)
#   rm_assert_eq "$(rm_json tags.b1 <<<"$out")" 10 "tag count"
#   rm_pass cross_node_tcp
#
# Conventions
# - Call rm_node, rm_pod, rm_bridge directly, never inside $(...): they keep
#   state in shell variables. Getters and rm_spawn are fine inside $(...).
# - Commands given to rm_exec/rm_spawn are programs (nsenter execs them);
#   wrap shell code in `bash -c`.
# - Commands enter a netns with `nsenter --net`, not `ip netns exec`: the
#   latter remounts /sys, which hides /sys/fs/cgroup and /sys/fs/bpf from the
#   agent and proxy.
# - Sub-checks print "PASS <case>" (rm_pass) or "FAIL <case>: why" (rm_fail,
#   which exits); the harness prints "PASS <test>" or "FAIL <test> (exit N)"
#   at exit, after teardown and the leak check.
# - Exit 77 means skipped; with RINGMESH_REQUIRE_ROOT_TESTS=1 a skip is a
#   failure instead.
# - Environment: RINGMESH_BUILD_DIR (tools), RM_RUN_ID (force the run id;
#   used by the abort test), RM_EXPORT_DIR (also record spawned processes
#   and cgroup ids there, so an outer test can check for leaks), RM_KEEP_LOGS=1
#   (print every spawned process's log at exit, not only on failure),
#   RM_TIMEOUT_S / RM_TIMEOUT_GRACE_S (the watchdog, see _rm_start_watchdog;
#   tests/netns/CMakeLists.txt sets RM_TIMEOUT_S under ctest's timeout).
# - A run killed together with its watchdog (SIGKILL to the whole group, or
#   to every process of a session that ends) leaves its things: no trap runs
#   then. The next run's rm_init tears such runs down (rm_gc_stale_runs);
#   gc_stale_runs.sh does the same by hand.

if [[ -n ${_RM_LIB_LOADED:-} ]]; then
  return 0
fi
_RM_LIB_LOADED=1

RM_TEST=""
RM_ID=""
RM_CG2=""
RM_CG=""
RM_PINROOT=""
RM_NS_PREFIX=""
RM_TMP=""
RM_TCP=""
RM_BPF_LINK=""
RM_CASE=""
RM_BPFFS=/sys/fs/bpf
declare -gA _RM_NODE_IDX=()   # node -> index k (1-based)
declare -gA _RM_NODE_PODS=()  # node -> number of pods made
declare -gA _RM_POD_NODE=()   # pod -> node
declare -gA _RM_POD_IP=()     # pod -> IPv4
declare -gA _RM_POD_VETH=()   # pod -> node-side veth name
declare -gA _RM_BRIDGED=()    # node -> 1 once joined to the bridge
_RM_BRIDGE=""
_RM_TORN_DOWN=0
_RM_TEARDOWN_RC=0
_RM_SLEEP_FD=""
_RM_WATCHDOG_PID=""
declare -ga _RM_DEFERRED=()

# ------------------------------------------------------------- logging ---

# PASS/FAIL lines go to the test's original stdout (dup'ed at rm_init), so
# a failure inside $(...) is still shown rather than captured.
_RM_OUT_FD=""
_rm_say() {
  if [[ -n $_RM_OUT_FD ]]; then
    printf '%s\n' "$*" >&"$_RM_OUT_FD"
  else
    printf '%s\n' "$*"
  fi
}

# Run in a subshell before exec'ing a command: the command must not hold
# the test's stdout (ctest waits for it to close).
_rm_close_out() {
  if [[ -n $_RM_OUT_FD ]]; then
    exec {_RM_OUT_FD}>&-
  fi
  if [[ -n $_RM_SLEEP_FD ]]; then
    exec {_RM_SLEEP_FD}>&-
  fi
}

rm_log() {
  printf '[%s %s] %s\n' "$(date +%T.%3N)" "${RM_TEST:-rm}" "$*" >&2
}

# rm_fail MSG: prints "FAIL <case or test>: MSG" and exits 1 (teardown runs).
rm_fail() {
  _rm_say "FAIL ${RM_CASE:-${RM_TEST:-test}}: $*"
  exit 1
}

# rm_case NAME: names the sub-check that assertions report on.
rm_case() {
  RM_CASE=$1
}

# rm_pass [NAME [DETAIL]]: prints "PASS NAME (DETAIL)".
rm_pass() {
  local name=${1:-$RM_CASE}
  _rm_say "PASS $name${2:+ ($2)}"
  RM_CASE=""
}

# rm_assert_eq ACTUAL EXPECTED [WHAT]
rm_assert_eq() {
  if [[ "$1" != "$2" ]]; then
    rm_fail "${3:-value}: expected '$2', got '$1'"
  fi
}

# rm_assert_between VALUE LOW HIGH [WHAT]: LOW <= VALUE <= HIGH, numbers
# (integers or decimals).
rm_assert_between() {
  if ! awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN {
      if (v !~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) exit 1
      exit !((v + 0) >= (lo + 0) && (v + 0) <= (hi + 0)) }'; then
    rm_fail "${4:-value}: expected between $2 and $3, got '$1'"
  fi
}

# rm_json [--default V] PATH: reads JSON on stdin (the last non-empty line
# if several), prints the value at the dotted PATH, e.g. errors.ECONNREFUSED
# (objects, lists and booleans as JSON). A missing key is an error unless
# --default gives the value to print.
rm_json() {
  local -a def=()
  if [[ ${1:-} == --default ]]; then
    def=("$2")
    shift 2
  fi
  python3 -c '
import json, sys
path = sys.argv[1]
default = sys.argv[2] if len(sys.argv) > 2 else None
lines = [l for l in sys.stdin.read().splitlines() if l.strip()]
if not lines:
    sys.exit("rm_json: no input")
v = json.loads(lines[-1])
for part in path.split(".") if path else []:
    if isinstance(v, dict) and part in v:
        v = v[part]
    elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
        v = v[int(part)]
    else:
        if default is not None:
            print(default)
            sys.exit(0)
        sys.exit("rm_json: no %s in %s" % (path, lines[-1]))
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)
' "$1" "${def[@]}"
}

# ---------------------------------------------------------------- init ---

# rm_skip REASON: "SKIP: REASON" and exit 77 (teardown runs if rm_init
# was done); a failure instead when RINGMESH_REQUIRE_ROOT_TESTS=1. Use it
# only when the machine truly lacks something, and say what.
rm_skip() {
  if [[ ${RINGMESH_REQUIRE_ROOT_TESTS:-0} == 1 ]]; then
    printf 'FAIL %s: required by RINGMESH_REQUIRE_ROOT_TESTS=1 but cannot run: %s\n' \
      "${RM_TEST:-test}" "$1"
    exit 1
  fi
  printf 'SKIP: %s\n' "$1"
  exit 77
}

# _rm_run CMD...: runs CMD; on failure ends the test saying which command.
_rm_run() {
  local rc=0
  "$@" || rc=$?
  if ((rc != 0)); then
    rm_fail "command failed (exit $rc): $*"
  fi
}

_rm_hex() {
  od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

_rm_record() {  # KIND LINE: state for teardown and leak checks
  printf '%s\n' "$2" >>"$RM_TMP/$1"
  if [[ -n ${RM_EXPORT_DIR:-} ]]; then
    printf '%s\n' "$2" >>"$RM_EXPORT_DIR/$1" || true
  fi
}

_rm_record_cgroup() {  # DIR: remember its cgroup id (the kernfs inode)
  _rm_record cgids "$(stat -c %i "$1") $1"
}

_rm_tool_path() {
  local build=${RINGMESH_BUILD_DIR:-${RINGMESH_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/build}
  printf '%s/tests/tools/%s' "$build" "$1"
}

# rm_tool NAME: path of a built test tool (rm-tcp, rm-bpf-link); fails if
# it is not built.
rm_tool() {
  local p
  p=$(_rm_tool_path "$1")
  if [[ ! -x $p ]]; then
    rm_fail "test tool $1 not built at $p (set RINGMESH_BUILD_DIR; ninja -C <build> $1)"
  fi
  printf '%s\n' "$p"
}

# rm_gc_stale_runs DELETE: lists the runs whose test shell is gone without
# its teardown (killed with SIGKILL together with its watchdog, or a crash)
# and, when DELETE is 1, tears each one down with rm_teardown. A run whose
# owner is alive, or whose owner cannot be established (no owner file yet:
# a run inside its rm_init), is never touched. Needs RM_CG2.
rm_gc_stale_runs() {
  local delete=$1 ids id tmp pid start stale=0
  ids=$({
    ip netns list | awk '{print $1}' | sed -n 's/^rmt\([a-z0-9]\{1,20\}\)-.*/\1/p'
    find "$RM_CG2" -maxdepth 1 -name 'ringmesh-test-*' -printf '%f\n' | sed 's/^ringmesh-test-//'
    find "$RM_BPFFS" -maxdepth 1 -name 'ringmesh-test-*' -printf '%f\n' 2>/dev/null | sed 's/^ringmesh-test-//'
  } | grep -E '^[a-z0-9]{1,20}$' | sort -u || true)
  for id in $ids; do
    tmp=$(compgen -G "${TMPDIR:-/tmp}/ringmesh-test-$id.*" | head -n 1 || true)
    if [[ -z $tmp || ! -s $tmp/owner ]]; then
      echo "run $id: owner unknown (no ${TMPDIR:-/tmp}/ringmesh-test-$id.*/owner), left alone"
      continue
    fi
    read -r pid start <"$tmp/owner"
    if [[ $(_rm_starttime "$pid") == "$start" && $(_rm_proc_state "$pid") != Z ]]; then
      echo "run $id: owner pid $pid alive, left alone"
      continue
    fi
    stale=$((stale + 1))
    echo "run $id: stale (owner pid $pid gone)"
    if ((delete)); then
      (
        RM_TEST="gc-$id" RM_ID=$id RM_NS_PREFIX="rmt$id-" RM_TMP=$tmp
        RM_CG="$RM_CG2/ringmesh-test-$id" RM_PINROOT="$RM_BPFFS/ringmesh-test-$id"
        _RM_TORN_DOWN=0
        rm_teardown
      ) || echo "run $id: teardown reported leftovers"
    fi
  done
  if ((stale > 0)); then
    echo "$stale stale run(s)$( ((delete)) && echo ' torn down' || echo '; rerun with --delete to remove them')"
  fi
}

# rm_init [NAME]: checks privileges, makes the run cgroup, pin root, temp
# dir and netns prefix, installs the traps. Sets RM_ID, RM_CG, RM_PINROOT,
# RM_NS_PREFIX, RM_TMP, RM_TCP, RM_BPF_LINK.
rm_init() {
  if [[ -n $RM_ID ]]; then
    rm_fail "rm_init called twice"
  fi
  RM_TEST=${1:-$(basename "${BASH_SOURCE[1]:-$0}" .sh)}
  if [[ $(id -u) -ne 0 ]]; then
    rm_skip "needs root (uid $(id -u)): network namespaces, cgroups and BPF"
  fi
  local tool
  for tool in ip nsenter ss bpftool python3 awk od; do
    command -v "$tool" >/dev/null || rm_skip "needs $tool"
  done
  if [[ $(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]; then
    RM_CG2=/sys/fs/cgroup/unified
  elif [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
    RM_CG2=/sys/fs/cgroup
  else
    rm_skip "no cgroup v2 at /sys/fs/cgroup/unified or /sys/fs/cgroup"
  fi
  if [[ $(stat -f -c %T "$RM_BPFFS" 2>/dev/null) != bpf_fs ]]; then
    # The machine's mount, not the run's: it stays after the test.
    rm_log "bpffs not mounted at $RM_BPFFS; mounting it (left in place)"
    if ! { mkdir -p "$RM_BPFFS" && mount -t bpf bpf "$RM_BPFFS"; }; then
      rm_skip "cannot mount bpffs at $RM_BPFFS"
    fi
  fi

  # What runs killed beyond their traps left behind (their owner is gone).
  rm_gc_stale_runs 1 >&2

  # Random part so aborted runs never collide; pid part to find the owner.
  RM_ID=${RM_RUN_ID:-$(_rm_hex 3)p$$}
  if [[ ! $RM_ID =~ ^[a-z0-9]{1,20}$ ]]; then
    RM_ID=""
    rm_fail "bad run id (want [a-z0-9]{1,20})"
  fi
  RM_NS_PREFIX="rmt${RM_ID}-"
  RM_CG="$RM_CG2/ringmesh-test-$RM_ID"
  RM_PINROOT="$RM_BPFFS/ringmesh-test-$RM_ID"

  exec {_RM_OUT_FD}>&1
  trap '_rm_on_signal INT 2' INT
  trap '_rm_on_signal TERM 15' TERM
  trap '_rm_on_signal HUP 1' HUP
  trap '_rm_on_exit' EXIT
  trap '_rm_on_err $? $LINENO' ERR

  RM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringmesh-test-$RM_ID.XXXXXX") || rm_fail "mktemp failed"
  : >"$RM_TMP/procs"
  : >"$RM_TMP/cgids"
  # who owns the run, for gc_stale_runs.sh: pid and start time of the shell
  echo "$$ $(_rm_starttime $$)" >"$RM_TMP/owner"
  if ip netns list | awk '{print $1}' | grep "^${RM_NS_PREFIX}" >/dev/null; then
    rm_fail "namespaces with prefix $RM_NS_PREFIX already exist (run id collision)"
  fi
  # mkdir without -p: an existing directory means a collision, not ours.
  mkdir "$RM_CG" || rm_fail "cannot create run cgroup $RM_CG"
  _rm_record_cgroup "$RM_CG"
  mkdir "$RM_PINROOT" || rm_fail "cannot create pin root $RM_PINROOT"
  # shellcheck disable=SC2034  # for the tests that source this file
  RM_TCP=$(_rm_tool_path rm-tcp)
  # shellcheck disable=SC2034
  RM_BPF_LINK=$(_rm_tool_path rm-bpf-link)
  # a FIFO nobody writes to: rm_sleep and the watchdog wait on it
  mkfifo "$RM_TMP/sleep.fifo" || rm_fail "mkfifo failed"
  exec {_RM_SLEEP_FD}<>"$RM_TMP/sleep.fifo"
  _rm_start_watchdog
  rm_log "run $RM_ID: cgroup $RM_CG, pins $RM_PINROOT, netns ${RM_NS_PREFIX}*, tmp $RM_TMP"
}

# The watchdog bounds the whole test and covers a test shell that dies
# without its traps (SIGKILL, e.g. from a test runner's timeout):
# - after RM_TIMEOUT_S (default 570, under ctest's 600) it sends SIGTERM to
#   the test shell, and RM_TIMEOUT_GRACE_S (15) later kills the run's
#   cgroup so a foreground
#   command in a pod cannot hold the trap back;
# - if the test shell is gone without having torn down, it tears the run
#   down itself.
# It has no child processes (it waits with `read -t` on a private FIFO), so
# killing it leaves nothing behind.
_rm_start_watchdog() {
  local shell=$$ shell_start limit=${RM_TIMEOUT_S:-570} grace=${RM_TIMEOUT_GRACE_S:-15}
  shell_start=$(_rm_starttime "$shell")
  (
    trap - INT TERM HUP EXIT ERR
    set +eu
    if [[ -n $_RM_OUT_FD ]]; then
      exec {_RM_OUT_FD}>&-
    fi
    exec </dev/null >/dev/null
    local start=$SECONDS signalled=0 killed=0
    while :; do
      read -r -t 1 -u "$_RM_SLEEP_FD" _
      if [[ $(_rm_starttime "$shell") != "$shell_start" || $(_rm_proc_state "$shell") == Z ]]; then
        rm_log "watchdog: test shell $shell ended without teardown; tearing run $RM_ID down"
        # shellcheck disable=SC2030  # the subshell's own teardown state
        _RM_TORN_DOWN=0
        rm_teardown
        exit
      fi
      if ((signalled == 0 && SECONDS - start >= limit)); then
        rm_log "watchdog: test ran longer than ${limit}s (RM_TIMEOUT_S); SIGTERM to the test shell"
        kill -TERM "$shell"
        signalled=$SECONDS
      elif ((signalled > 0 && killed == 0 && SECONDS - signalled >= grace)); then
        killed=1
        rm_log "watchdog: test shell still busy; killing the run's processes"
        _rm_cg_kill "$RM_CG"
      fi
    done
  ) &
  _RM_WATCHDOG_PID=$!
}

_rm_check_name() {
  if [[ ! $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$ ]]; then
    rm_fail "bad name '$1' (letters, digits, _ . -; at most 31)"
  fi
  if [[ $1 == br ]]; then
    rm_fail "'br' is reserved for the bridge namespace"
  fi
  if [[ -n ${_RM_NODE_IDX[$1]:-} || -n ${_RM_POD_NODE[$1]:-} ]]; then
    rm_fail "name '$1' is already a node or pod"
  fi
}

_rm_need_init() {
  if [[ -z $RM_ID ]]; then
    rm_fail "call rm_init first"
  fi
}

# _rm_nsexec NETNS CMD...: CMD in a namespace, same cgroup as the caller.
_rm_nsexec() {
  local ns=$1
  shift
  nsenter --net="/run/netns/$ns" -- "$@"
}

# --------------------------------------------------------------- nodes ---

# rm_node NAME: netns rmt<id>-NAME (lo up, forwarding on), cgroup
# <run>/NAME/{pods,system}, pin dir <pinroot>/NAME. Node k (1-based, in
# creation order) owns the pod range 198.18.k.0/24 with gateway 198.18.k.1.
rm_node() {
  _rm_need_init
  local name=$1
  _rm_check_name "$name"
  local k=$((${#_RM_NODE_IDX[@]} + 1))
  if ((k > 250)); then
    rm_fail "too many nodes"
  fi
  local ns=$RM_NS_PREFIX$name
  _rm_run ip netns add "$ns"
  _RM_NODE_IDX[$name]=$k
  _RM_NODE_PODS[$name]=0
  _rm_run ip -n "$ns" link set lo up
  _rm_run _rm_nsexec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  _rm_run mkdir "$RM_CG/$name" "$RM_CG/$name/pods" "$RM_CG/$name/system"
  _rm_record_cgroup "$RM_CG/$name"
  _rm_record_cgroup "$RM_CG/$name/pods"
  _rm_record_cgroup "$RM_CG/$name/system"
  _rm_run mkdir "$RM_PINROOT/$name"
  if [[ -n $_RM_BRIDGE ]]; then
    _rm_bridge_join "$name"
  fi
}

_rm_node_k() {
  local k=${_RM_NODE_IDX[$1]:-}
  if [[ -z $k ]]; then
    rm_fail "no node '$1'"
  fi
  printf '%s' "$k"
}

rm_node_netns() { _rm_node_k "$1" >/dev/null && printf '%s\n' "$RM_NS_PREFIX$1"; }
rm_node_netns_path() { _rm_node_k "$1" >/dev/null && printf '/run/netns/%s\n' "$RM_NS_PREFIX$1"; }
rm_node_cgroup() { _rm_node_k "$1" >/dev/null && printf '%s\n' "$RM_CG/$1/pods"; }
rm_node_system_cgroup() { _rm_node_k "$1" >/dev/null && printf '%s\n' "$RM_CG/$1/system"; }
rm_node_pindir() { _rm_node_k "$1" >/dev/null && printf '%s\n' "$RM_PINROOT/$1"; }
rm_node_index() { _rm_node_k "$1" && echo; }
rm_node_gateway() {
  local k
  k=$(_rm_node_k "$1") || return 1
  printf '198.18.%s.1\n' "$k"
}
rm_node_pod_cidr() {
  local k
  k=$(_rm_node_k "$1") || return 1
  printf '198.18.%s.0/24\n' "$k"
}
# rm_node_ip NAME: the node's address on the bridge (after rm_bridge).
rm_node_ip() {
  local k
  k=$(_rm_node_k "$1") || return 1
  printf '198.19.0.%s\n' "$k"
}
# rm_nodes: all node names in creation order.
rm_nodes() {
  local n
  for n in "${!_RM_NODE_IDX[@]}"; do
    printf '%s %s\n' "${_RM_NODE_IDX[$n]}" "$n"
  done | sort -n | awk '{print $2}'
}

# ---------------------------------------------------------------- pods ---

# rm_pod NODE POD [IP]: netns rmt<id>-POD with eth0 (IP/32, default route
# via the node's gateway 198.18.k.1) veth-paired to vpN in the node, which
# routes IP/32 to it; cgroup <node>/pods/POD. IP defaults to the next free
# 198.18.k.(10+n) and must lie in the node's 198.18.k.0/24.
rm_pod() {
  _rm_need_init
  local node=$1 pod=$2 ip=${3:-}
  local k
  k=$(_rm_node_k "$node") || exit 1
  _rm_check_name "$pod"
  local n=$((${_RM_NODE_PODS[$node]} + 1))
  if [[ -z $ip || $ip == auto ]]; then
    ip=198.18.$k.$((9 + n))
  fi
  if [[ ! $ip =~ ^198\.18\.$k\.([1-9][0-9]{0,2})$ ]] || ((BASH_REMATCH[1] < 2 || BASH_REMATCH[1] > 254)); then
    rm_fail "pod IP $ip of $pod must be in node $node's range 198.18.$k.2-254"
  fi
  local p
  for p in "${!_RM_POD_IP[@]}"; do
    if [[ ${_RM_POD_IP[$p]} == "$ip" ]]; then
      rm_fail "pod IP $ip already used by $p"
    fi
  done
  local nodens=$RM_NS_PREFIX$node ns=$RM_NS_PREFIX$pod veth=vp$n gw=198.18.$k.1
  _rm_run ip netns add "$ns"
  _RM_POD_NODE[$pod]=$node
  _RM_POD_IP[$pod]=$ip
  _RM_POD_VETH[$pod]=$veth
  _RM_NODE_PODS[$node]=$n
  _rm_run ip -n "$ns" link set lo up
  # Made inside the node netns with the peer moved straight into the pod:
  # no interface ever appears in the machine's namespace.
  _rm_run ip -n "$nodens" link add "$veth" type veth peer name eth0 netns "$ns"
  _rm_run ip -n "$nodens" addr add "$gw/32" dev "$veth"
  _rm_run ip -n "$nodens" link set "$veth" up
  _rm_run ip -n "$nodens" route add "$ip/32" dev "$veth"
  _rm_run ip -n "$ns" addr add "$ip/32" dev eth0
  _rm_run ip -n "$ns" link set eth0 up
  _rm_run ip -n "$ns" route add "$gw/32" dev eth0 scope link
  _rm_run ip -n "$ns" route add default via "$gw" dev eth0
  _rm_run mkdir "$RM_CG/$node/pods/$pod"
  _rm_record_cgroup "$RM_CG/$node/pods/$pod"
}

_rm_pod_node() {
  local node=${_RM_POD_NODE[$1]:-}
  if [[ -z $node ]]; then
    rm_fail "no pod '$1'"
  fi
  printf '%s' "$node"
}

rm_pod_netns() { _rm_pod_node "$1" >/dev/null && printf '%s\n' "$RM_NS_PREFIX$1"; }
rm_pod_netns_path() { _rm_pod_node "$1" >/dev/null && printf '/run/netns/%s\n' "$RM_NS_PREFIX$1"; }
rm_pod_cgroup() {
  local node
  node=$(_rm_pod_node "$1") && printf '%s\n' "$RM_CG/$node/pods/$1"
}
rm_pod_ip() { _rm_pod_node "$1" >/dev/null && printf '%s\n' "${_RM_POD_IP[$1]}"; }
rm_pod_node() { _rm_pod_node "$1" && echo; }
# rm_pod_veth POD: the pod's veth on the node side (in the node netns).
rm_pod_veth() { _rm_pod_node "$1" >/dev/null && printf '%s\n' "${_RM_POD_VETH[$1]}"; }

# -------------------------------------------------------------- bridge ---

# rm_bridge: a bridge namespace rmt<id>-br joining every node (also the ones
# made later): node k gets eth0 198.19.0.k/24 and routes to the other nodes'
# pod ranges.
rm_bridge() {
  _rm_need_init
  if [[ -n $_RM_BRIDGE ]]; then
    return 0
  fi
  local ns=${RM_NS_PREFIX}br
  _rm_run ip netns add "$ns"
  _RM_BRIDGE=$ns
  _rm_run ip -n "$ns" link set lo up
  _rm_run ip -n "$ns" link add br0 type bridge
  _rm_run ip -n "$ns" link set br0 up
  local node
  for node in $(rm_nodes); do
    _rm_bridge_join "$node"
  done
}

rm_bridge_netns() {
  if [[ -z $_RM_BRIDGE ]]; then
    rm_fail "no bridge"
  fi
  printf '%s\n' "$_RM_BRIDGE"
}

_rm_bridge_join() {
  local node=$1 k other j
  k=$(_rm_node_k "$node") || exit 1
  local nodens=$RM_NS_PREFIX$node
  _rm_run ip -n "$_RM_BRIDGE" link add "n$k" type veth peer name eth0 netns "$nodens"
  _rm_run ip -n "$_RM_BRIDGE" link set "n$k" master br0
  _rm_run ip -n "$_RM_BRIDGE" link set "n$k" up
  _rm_run ip -n "$nodens" addr add "198.19.0.$k/24" dev eth0
  _rm_run ip -n "$nodens" link set eth0 up
  for other in "${!_RM_BRIDGED[@]}"; do
    j=${_RM_NODE_IDX[$other]}
    _rm_run ip -n "$nodens" route add "198.18.$j.0/24" via "198.19.0.$j" dev eth0
    _rm_run ip -n "$RM_NS_PREFIX$other" route add "198.18.$k.0/24" via "198.19.0.$k" dev eth0
  done
  _RM_BRIDGED[$node]=1
}

# --------------------------------------------------------- processes ---

# _rm_target WHO: "POD" or "NODE:system" -> "netns cgroupdir"
_rm_target() {
  local who=$1
  if [[ $who == *:system ]]; then
    local node=${who%:system}
    _rm_node_k "$node" >/dev/null
    printf '%s %s' "$RM_NS_PREFIX$node" "$RM_CG/$node/system"
  elif [[ -n ${_RM_POD_NODE[$who]:-} ]]; then
    printf '%s %s' "$RM_NS_PREFIX$who" "$RM_CG/${_RM_POD_NODE[$who]}/pods/$who"
  elif [[ -n ${_RM_NODE_IDX[$who]:-} ]]; then
    rm_fail "'$who' is a node: say '$who:system' (processes run in the node's system cgroup)"
  else
    rm_fail "no pod or node '$who'"
  fi
}

# rm_exec POD CMD...: runs CMD in the pod's netns and cgroup, in the
# foreground; returns its exit code. The subshell moves itself into the
# cgroup, then nsenter execs CMD, so CMD's pid is in the cgroup from start.
rm_exec() {
  local target ns cg rc=0 target_name=$1
  target=$(_rm_target "$1") || exit 1
  read -r ns cg <<<"$target"
  shift
  (_rm_close_out && echo "$BASHPID" >"$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" -- "$@") || rc=$?
  if ((rc != 0)); then
    _RM_LAST_FAILED="rm_exec $target_name $*"
  fi
  return "$rc"
}

# rm_exec_node NODE CMD...: CMD in the node's netns and its system cgroup.
rm_exec_node() {
  local node=$1
  shift
  rm_exec "$node:system" "$@"
}

_rm_starttime() {  # PID -> field 22 of /proc/PID/stat (empty if gone)
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  local -a f
  read -r -a f <<<"$s"
  printf '%s' "${f[19]:-}"
}

_rm_proc_state() {  # PID -> state letter (R, S, Z, ...) or empty
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  printf '%s' "${s%% *}"
}

# rm_spawn [--log FILE] POD|NODE:system CMD...: starts CMD in the
# background in that netns and cgroup, stdout+stderr to FILE (default a
# file in the run's temp dir, see rm_spawn_log), stdin from /dev/null.
# Prints the pid. Teardown stops it (SIGTERM, then cgroup.kill).
rm_spawn() {
  local log=""
  if [[ ${1:-} == --log ]]; then
    log=$2
    shift 2
  fi
  local target ns cg
  target=$(_rm_target "$1") || exit 1
  read -r ns cg <<<"$target"
  shift
  if [[ -z $log ]]; then
    log=$(mktemp "$RM_TMP/spawn-XXXXXX.log")
  fi
  (_rm_close_out
    echo "$BASHPID" >"$cg/cgroup.procs" || exit 97
    exec nsenter --net="/run/netns/$ns" -- "$@") </dev/null >>"$log" 2>&1 &
  local pid=$!
  _rm_record procs "$pid $(_rm_starttime "$pid") $cg $log $(printf '%q' "$1")"
  # Return only once the process is in its cgroup, so teardown's
  # cgroup.kill covers it even if we are interrupted right after.
  local want="0::${cg#"$RM_CG2"}" i
  for ((i = 0; i < 500; i++)); do
    if grep -qxF "$want" "/proc/$pid/cgroup" 2>/dev/null || [[ ! -e /proc/$pid ]]; then
      break
    fi
    sleep 0.01
  done
  printf '%s\n' "$pid"
}

# rm_spawn_log PID: the log file of a spawned process.
rm_spawn_log() {
  awk -v p="$1" '$1 == p {print $4; exit}' "$RM_TMP/procs"
}

_rm_is_ours() {  # PID STARTTIME: alive, same process, inside the run cgroup
  local pid=$1 st=$2
  [[ -n $st && $(_rm_starttime "$pid") == "$st" ]] || return 1
  [[ $(_rm_proc_state "$pid") != Z ]] || return 1
  grep -q "^0::${RM_CG#"$RM_CG2"}/" "/proc/$pid/cgroup" 2>/dev/null
}

# rm_stop PID [TIMEOUT_S]: SIGTERM a spawned process, wait for it to exit
# (SIGKILL after TIMEOUT_S, default 5). Only acts on processes this run
# spawned and that are still in its cgroup.
rm_stop() {
  local pid=$1 timeout=${2:-5} st i
  st=$(awk -v p="$pid" '$1 == p {print $2; exit}' "$RM_TMP/procs")
  if ! _rm_is_ours "$pid" "$st"; then
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 20; i++)); do
    _rm_is_ours "$pid" "$st" || break
    sleep 0.05
  done
  if _rm_is_ours "$pid" "$st"; then
    rm_log "pid $pid ignored SIGTERM for ${timeout}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# rm_sleep SECONDS: a sleep that INT/TERM interrupt at once (bash runs traps
# only after a foreground command ends, but a `read -t` builtin returns on
# a trapped signal) and that leaves no process behind if the shell dies.
rm_sleep() {
  read -r -t "$1" -u "$_RM_SLEEP_FD" _ || true
}

# rm_wait_port NETNS|POD|NODE IP PORT TIMEOUT_S: waits until something
# listens on IP:PORT (or the wildcard address) in that namespace. Returns 1
# (after logging) on timeout.
rm_wait_port() {
  local ns=$1 ip=$2 port=$3 timeout=$4
  if [[ -n ${_RM_POD_NODE[$ns]:-} || -n ${_RM_NODE_IDX[$ns]:-} || $ns == br ]]; then
    ns=$RM_NS_PREFIX$ns
  fi
  local tries
  tries=$(awk -v t="$timeout" 'BEGIN {printf "%d", t * 20 + 1}')
  local i
  for ((i = 0; i < tries; i++)); do
    if _rm_nsexec "$ns" ss -Hltn "sport = :$port" 2>/dev/null | awk -v ip="$ip" -v port="$port" '
        { a = $4; if (a == ip ":" port || a == "0.0.0.0:" port || a == "*:" port || a == "[::]:" port) f = 1 }
        END { exit !f }'; then
      return 0
    fi
    sleep 0.05
  done
  rm_log "nothing listening on $ip:$port in $ns after ${timeout}s"
  return 1
}

# ------------------------------------------------------------ teardown ---

# rm_defer CMD: runs the shell command string CMD at the start of teardown
# (last registered first), before processes are stopped. For things a test
# makes outside the harness (child runs, extra files).
rm_defer() {
  _RM_DEFERRED+=("$*")
}

_RM_LAST_FAILED=""
_rm_on_err() {
  if [[ $- == *e* ]]; then
    local what=$BASH_COMMAND
    # shellcheck disable=SC2016  # the literal text of rm_exec's last line
    if [[ $what == 'return "$rc"' && -n $_RM_LAST_FAILED ]]; then
      what=$_RM_LAST_FAILED  # the failure came out of rm_exec
    fi
    rm_log "command failed (exit $1), test stops: $what"
  fi
}

_rm_on_signal() {
  rm_log "caught SIG$1; tearing down"
  exit $((128 + $2))
}

_rm_on_exit() {
  local rc=$?
  set +eu
  trap '' INT TERM HUP
  trap - EXIT ERR
  if [[ $rc -ne 0 && $rc -ne 77 ]] || [[ ${RM_KEEP_LOGS:-0} == 1 ]]; then
    _rm_dump_logs
  fi
  if ! rm_teardown; then
    if ((rc == 0 || rc == 77)); then
      rc=1
    fi
  fi
  if ((rc == 0)); then
    _rm_say "PASS $RM_TEST"
  elif ((rc != 77)); then
    _rm_say "FAIL $RM_TEST (exit $rc)"
  fi
  exit "$rc"
}

_rm_dump_logs() {
  [[ -n $RM_TMP && -s $RM_TMP/procs ]] || return 0
  local pid st cg log cmd
  while read -r pid st cg log cmd; do
    [[ -s $log ]] || continue
    printf -- '--- log of pid %s (%s) in %s: last 40 lines of %s\n' "$pid" "$cmd" "${cg#"$RM_CG2"/}" "$log" >&2
    tail -n 40 "$log" >&2
  done <"$RM_TMP/procs"
}

# _rm_cg_populated DIR: 0 if any process is in DIR's subtree.
_rm_cg_populated() {
  grep -q '^populated 1' "$1/cgroup.events" 2>/dev/null
}

_rm_cg_kill() {  # DIR: SIGKILL every process in the subtree
  if [[ -e $1/cgroup.kill ]]; then
    echo 1 >"$1/cgroup.kill" 2>/dev/null
  else  # kernels before 5.14
    local f p
    while read -r f; do
      while read -r p; do
        kill -KILL "$p" 2>/dev/null
      done <"$f"
    done < <(find "$1" -name cgroup.procs 2>/dev/null)
  fi
}

# Lists BPF attachments of our cgroups: "prog_id attach_type cgroup" lines.
_rm_bpf_attachments() {
  bpftool cgroup tree "$RM_CG" 2>/dev/null | awk '
    /^\// { cg = $1; $1 = ""; sub(/^ +/, "") }
    /^[[:space:]]*[0-9]+[[:space:]]/ && cg != "" { print $1, $2, cg }'
}

# Lists bpf_links attached to any of the cgroup ids in FILE ("id path" lines).
_rm_bpf_links_on() {
  local ids
  ids=$(awk '{print $1}' "$1" 2>/dev/null | sort -u | tr '\n' ' ')
  [[ -n $ids ]] || return 0
  bpftool -j link show 2>/dev/null | python3 -c '
import json, sys
ids = set(int(x) for x in sys.argv[1].split())
try:
    links = json.load(sys.stdin)
except ValueError:
    links = []
for l in links:
    if l.get("cgroup_id") in ids:
        held = " ".join("%s(pid %s)" % (p.get("comm"), p.get("pid")) for p in l.get("pids", []))
        print("bpf_link id=%s prog_id=%s attach=%s cgroup_id=%s%s" % (
            l.get("id"), l.get("prog_id"), l.get("attach_type"), l.get("cgroup_id"),
            " held by " + held if held else ""))
' "$ids"
}

# rm_teardown: stops recorded processes, kills what is left in the run's
# cgroups, removes the pin root (unpinning links), checks that no bpf_link
# still references the run's cgroups, deletes the namespaces and cgroups,
# then runs the leak check and removes the temp dir. Idempotent; returns
# non-zero if anything leaked.
rm_teardown() {
  # shellcheck disable=SC2031
  if ((_RM_TORN_DOWN)); then
    return "$_RM_TEARDOWN_RC"
  fi
  _RM_TORN_DOWN=1
  local -
  set +eu
  if [[ -z $RM_ID || ! $RM_ID =~ ^[a-z0-9]{1,20}$ ]]; then
    return 0  # nothing was made
  fi
  local cg=$RM_CG2/ringmesh-test-$RM_ID pinroot=$RM_BPFFS/ringmesh-test-$RM_ID
  local bpf_leaks="" i pid st rest

  if [[ -n $_RM_WATCHDOG_PID && $BASHPID == "$$" ]]; then
    kill -TERM "$_RM_WATCHDOG_PID" 2>/dev/null
    wait "$_RM_WATCHDOG_PID" 2>/dev/null
  fi
  for ((i = ${#_RM_DEFERRED[@]} - 1; i >= 0; i--)); do
    eval "${_RM_DEFERRED[i]}" || rm_log "teardown: deferred '${_RM_DEFERRED[i]}' failed"
  done

  # Never kill the cgroup we are in ourselves.
  if grep -q "^0::${cg#"$RM_CG2"}\(/\|$\)" /proc/$$/cgroup 2>/dev/null; then
    rm_log "teardown: this shell is inside $cg; refusing to kill it (leaving it for the leak check)"
  else
    # 1. polite stop of recorded processes, bounded to ~3 s in total
    if [[ -s $RM_TMP/procs ]]; then
      while read -r pid st rest; do
        _rm_is_ours "$pid" "$st" && kill -TERM "$pid" 2>/dev/null
      done <"$RM_TMP/procs"
      for ((i = 0; i < 60; i++)); do
        local alive=0
        while read -r pid st rest; do
          _rm_is_ours "$pid" "$st" && alive=1
        done <"$RM_TMP/procs"
        ((alive)) || break
        sleep 0.05
      done
    fi
    # 2. everything left in the run's cgroups
    if [[ -d $cg ]]; then
      for ((i = 0; i < 50; i++)); do
        _rm_cg_populated "$cg" || break
        _rm_cg_kill "$cg"
        sleep 0.1
      done
    fi
  fi
  # reap our own children so they do not linger as zombies
  if [[ -s $RM_TMP/procs ]]; then
    while read -r pid st rest; do
      wait "$pid" 2>/dev/null
    done <"$RM_TMP/procs"
  fi

  # 3. unpin everything: links whose last reference was the pin detach
  if [[ -e $pinroot ]]; then
    rm -rf --one-file-system "$pinroot" 2>/dev/null || rm -rf "$pinroot"
  fi

  # 4. BPF evidence while the cgroups still exist: afterwards the kernel
  # detaches links of removed cgroups and their cgroup id no longer names
  # anything. Link release after unpinning is asynchronous: retry ~3 s.
  if [[ -d $cg ]]; then
    find "$cg" -type d -printf '%i %p\n' >>"$RM_TMP/cgids" 2>/dev/null
    for ((i = 0; i < 30; i++)); do
      bpf_leaks=$(_rm_bpf_links_on "$RM_TMP/cgids")
      [[ -n $bpf_leaks ]] || break
      sleep 0.1
    done
    local att
    att=$(_rm_bpf_attachments)
    if [[ -n $att && -z $bpf_leaks ]]; then
      rm_log "warning: non-link BPF attachments on the run's cgroups (released with the cgroups):"
      printf '  %s\n' "$att" >&2
    fi
  fi
  if [[ -n $bpf_leaks ]]; then
    printf '%s\n' "$bpf_leaks" >"$RM_TMP/bpf_leaks"
  fi

  # 5. namespaces (veths go with them)
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^rmt${RM_ID}-"); do
    ip netns del "$ns" 2>/dev/null || rm_log "teardown: ip netns del $ns failed"
  done

  # 6. cgroups, deepest first; they may take a moment to empty
  if [[ -d $cg ]]; then
    for ((i = 0; i < 50; i++)); do
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [[ -d $cg ]] || break
      _rm_cg_kill "$cg"
      sleep 0.1
    done
  fi

  # 7. leak check, then the temp dir. A process killed above may still be
  # in its exit (an ASan build's exit can take a while on a busy machine):
  # what is gone within 5 s was not leaked; a real leak is still there.
  local leaks
  leaks=$(_rm_leaks "$RM_ID" "$RM_TMP")
  for ((i = 0; i < 50; i++)); do
    [[ -z ${leaks//$'\n'/} ]] && break
    sleep 0.1
    leaks=$(_rm_leaks "$RM_ID" "$RM_TMP")
  done
  if [[ -n $RM_TMP && -d $RM_TMP && $RM_TMP == */ringmesh-test-"$RM_ID".* ]]; then
    rm -rf "$RM_TMP"
    if [[ -e $RM_TMP ]]; then
      leaks+=$'\n'"tempdir: $RM_TMP"
    fi
  fi
  if [[ -n ${leaks//$'\n'/} ]]; then
    _rm_say "FAIL $RM_TEST: leak check: these remain after teardown:"
    _rm_say "$(printf '%s\n' "$leaks" | sed '/^$/d; s/^/  /')"
    _RM_TEARDOWN_RC=1
  else
    rm_log "teardown complete, leak check clean"
    _RM_TEARDOWN_RC=0
  fi
  return "$_RM_TEARDOWN_RC"
}

# _rm_leaks ID STATEDIR: prints one line per thing of run ID that still
# exists. STATEDIR holds "procs" (pid starttime ...), "cgids" (id path) and
# optionally "bpf_leaks" (found before the cgroups were removed).
_rm_leaks() {
  local id=$1 state=$2 cg2=${RM_CG2:-/sys/fs/cgroup/unified}
  local ns pid st rest
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^rmt${id}-"); do
    echo "netns: $ns"
  done
  if [[ -e $cg2/ringmesh-test-$id ]]; then
    echo "cgroup: $(find "$cg2/ringmesh-test-$id" -type d | tr '\n' ' ')"
  fi
  if [[ -e $RM_BPFFS/ringmesh-test-$id ]]; then
    echo "pin: $(find "$RM_BPFFS/ringmesh-test-$id" | tr '\n' ' ')"
  fi
  if [[ -s $state/procs ]]; then
    while read -r pid st rest; do
      if [[ -n $st && $(_rm_starttime "$pid") == "$st" && $(_rm_proc_state "$pid") != Z ]]; then
        echo "process: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)[$(awk '/^(State|PPid|Threads):/ {printf "%s %s ", $1, $2}' "/proc/$pid/status" 2>/dev/null)recorded: $rest]"
      fi
    done <"$state/procs"
  fi
  if [[ -s $state/bpf_leaks ]]; then
    sed 's/^/bpf (before cgroup removal): /' "$state/bpf_leaks"
  fi
  if [[ -s $state/cgids ]]; then
    _rm_bpf_links_on "$state/cgids"
  fi
}

# rm_leak_check [ID STATEDIR]: with no arguments, the current run (done by
# teardown already; prints nothing new). With a run id and the STATEDIR the
# run exported to (RM_EXPORT_DIR), checks another run, e.g. a child test
# that was aborted: prints the leaks and returns 1 if there are any.
rm_leak_check() {
  local id=${1:-$RM_ID} state=${2:-$RM_TMP}
  local leaks
  leaks=$(_rm_leaks "$id" "$state" 2>/dev/null)
  if [[ -n $leaks ]]; then
    printf 'leaks of run %s:\n' "$id"
    printf '%s\n' "$leaks" | sed 's/^/  /'
    return 1
  fi
  return 0
}
