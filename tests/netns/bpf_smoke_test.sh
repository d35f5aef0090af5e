#!/usr/bin/env bash
# Kernel smoke test of the BPF pipeline on a harness node: the agent loads
# the project's object, attaches its cgroup programs through pinned
# bpf_links to the node cgroup, a connect from inside a pod runs the program
# (the per-CPU connect counter rises), and teardown leaves nothing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/mesh.sh"

rm_init bpf_smoke
mesh_init
rm_node n1
rm_pod n1 app
rm_pod n1 srv

nodefile=$RM_TMP/node.yaml
cat >"$nodefile" <<YAML
pods:
  - namespace: default
    name: app
    netns: $(rm_pod_netns_path app)
    ips: [$(rm_pod_ip app)]
    mode: enabled
YAML
mesh_start_agent n1 "$nodefile"

rm_case links_pinned
links=$(mesh_ctl n1 -o json bpf | rm_json links)
n_links=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$links")
rm_assert_eq "$n_links" 4 "pinned links (connect4, connect6, sockops, sk_msg)"
cgid=$(python3 -c 'import json,sys; print(sorted({l["cgroup_id"] for l in json.loads(sys.argv[1]) if l["cgroup_id"]}))' "$links")
want=$(stat -c %i "$(mesh_node_cgroup n1)")
rm_assert_eq "$cgid" "[$want]" "cgroup links point at the node cgroup"
rm_pass links_pinned

rm_case connect_runs_program
rm_spawn srv "$RM_TCP" --deadline-ms 900000 serve --listen "$(rm_pod_ip srv):8080" --tag srv >/dev/null
rm_wait_port srv "$(rm_pod_ip srv)" 8080 5
before=$(mesh_counter n1 connect_seen)
# No proxy runs and the pod is fail-open: the connect is seen, not
# redirected, and goes straight to the server.
out=$(rm_exec app "$RM_TCP" connect --to "$(rm_pod_ip srv):8080" --count 3 --parallel 1)
rm_assert_eq "$(rm_json ok <<<"$out")" 3 "connections ok"
after=$(mesh_counter n1 connect_seen)
rm_assert_eq "$((after - before))" 3 "connect_seen delta"
rm_assert_eq "$(mesh_counter n1 fail_open)" 3 "fail_open (no proxy listening)"
rm_pass connect_runs_program

rm_case agent_stop_keeps_pins
rm_stop "$(mesh_agent_pid n1)"
out=$(rm_exec app "$RM_TCP" connect --to "$(rm_pod_ip srv):8080" --count 2 --parallel 1)
rm_assert_eq "$(mesh_counter n1 connect_seen)" "$((after + 2))" "programs keep running with the agent gone"
rm_pass agent_stop_keeps_pins

# Two agents on one pin dir (a DaemonSet surge): the newer one writes the
# maps, the older stands by; when the newer one dies the older takes over.
rm_case datapath_lease_handover
mesh_start_agent n1 "$nodefile" --lease-timeout-ms 600
first=$(mesh_agent_pid n1)
second=$(rm_spawn n1:system "$MESH_AGENT" --pin-dir "$(rm_node_pindir n1)" --cgroup "$(mesh_node_cgroup n1)" \
  --node-file "$nodefile" --agent-socket "$RM_TMP/second.sock" --status-file "$RM_TMP/second.json" \
  --poll-interval-ms 100 --lease-timeout-ms 600)
role() { rm_json --default none datapath_role <"$1" 2>/dev/null; }
is_role() { [[ $(role "$1") == "$2" ]]; }
mesh_wait_for "second agent owns the datapath" 5 is_role "$RM_TMP/second.json" owner
mesh_wait_for "first agent stands by" 5 is_role "$(mesh_status_file n1)" standby
kill -KILL "$second"
mesh_wait_for "first agent takes over" 5 is_role "$(mesh_status_file n1)" owner
grep -q "datapath lease taken over" "$(rm_spawn_log "$first")" || rm_fail "no takeover log line"
rm_pass datapath_lease_handover
