#!/usr/bin/env bash
# abort_child.sh MODE: a test that goes wrong on purpose, run by
# harness_abort_test.sh (not registered on its own). It builds a topology
# (two nodes on a bridge, pods, spawned servers, a pinned map, a pinned
# bpf_link and a process-held one), writes "$RM_EXPORT_DIR/ready", then:
#   fail   a command fails under set -e in the middle of the topology
#   term   waits in rm_sleep for the parent's SIGTERM
#   int    waits in a foreground `sleep` for the parent's SIGINT to the group
#   kill9  waits for the parent's SIGKILL: no trap runs, the watchdog of
#          lib.sh has to notice and tear the run down
#   killgroup waits for the parent's SIGKILL to its whole process group,
#          the watchdog included: nothing of the run can clean up, the
#          next run's rm_init has to (rm_gc_stale_runs)
#   timeout runs a long foreground command in a pod; the parent set a short
#          RM_TIMEOUT_S, so the watchdog must SIGTERM the test and then kill
#          the pod's command that holds the trap back
#   race   keeps adding pods and processes until the parent's signal
#   leak   finishes "successfully" but leaves a bpf_link held by a process
#          outside the run's cgroups: the leak check must fail the run
# The parent sets RM_RUN_ID and RM_EXPORT_DIR to find what was made.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=$1
rm_init "abort_child_$mode"
[[ -n ${RM_EXPORT_DIR:-} ]] || rm_fail "RM_EXPORT_DIR not set"

rm_node n1
rm_pod n1 a1
rm_spawn a1 "$RM_TCP" serve --listen "$(rm_pod_ip a1):8080" --tag a1 --deadline-ms 120000 >/dev/null
rm_spawn n1:system sleep 120 >/dev/null
bpftool map create "$(rm_node_pindir n1)/scratch_map" type array key 4 value 4 entries 1 name rmt_abort
bpftool -j map show pinned "$(rm_node_pindir n1)/scratch_map" | rm_json id >>"$RM_EXPORT_DIR/maps"
"$RM_BPF_LINK" --cgroup "$(rm_node_cgroup n1)" --pin "$(rm_node_pindir n1)/link" |
  rm_json link_id >>"$RM_EXPORT_DIR/links"

if [[ $mode == fail ]]; then
  echo ready >"$RM_EXPORT_DIR/ready"
  false  # the failure in the middle: nothing below runs
fi

rm_node n2
rm_bridge
rm_pod n2 b1
held=$(rm_spawn n2:system "$RM_BPF_LINK" --cgroup "$(rm_node_cgroup n2)" --hold)
for ((i = 0; i < 100; i++)); do
  id=$(rm_json --default "" link_id <"$(rm_spawn_log "$held")" 2>/dev/null || true)
  [[ -z $id ]] || break
  sleep 0.05
done
echo "$id" >>"$RM_EXPORT_DIR/links"
rm_wait_port a1 "$(rm_pod_ip a1)" 8080 10
rm_exec b1 "$RM_TCP" connect --to "$(rm_pod_ip a1):8080" --count 3 >/dev/null

case $mode in
  term | kill9 | killgroup)
    echo ready >"$RM_EXPORT_DIR/ready"
    rm_sleep 60
    ;;
  int)
    echo ready >"$RM_EXPORT_DIR/ready"
    sleep 60
    ;;
  timeout)
    echo ready >"$RM_EXPORT_DIR/ready"
    rm_exec a1 sleep 60 || true
    ;;
  race)
    echo ready >"$RM_EXPORT_DIR/ready"
    for ((i = 0; i < 60; i++)); do
      rm_pod n2 "r$i"
      rm_spawn "r$i" sleep 120 >/dev/null
    done
    ;;
  leak)
    # Outside the harness: this process is in the parent's cgroup, so
    # teardown cannot kill it and its link outlives the pins.
    "$RM_BPF_LINK" --cgroup "$(rm_node_cgroup n1)" --hold >"$RM_EXPORT_DIR/leaker.out" 2>&1 &
    echo $! >"$RM_EXPORT_DIR/leaker.pid"
    for ((i = 0; i < 100; i++)); do
      [[ ! -s $RM_EXPORT_DIR/leaker.out ]] || break
      sleep 0.05
    done
    echo ready >"$RM_EXPORT_DIR/ready"
    exit 0
    ;;
esac
rm_fail "mode $mode: should not get here"
