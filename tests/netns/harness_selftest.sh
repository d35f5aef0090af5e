#!/usr/bin/env bash
# harness_selftest.sh: proves the namespace harness itself. Two nodes joined
# by a bridge, two pods each; commands really run in the pod's netns and
# cgroup; TCP works within a node and across nodes (tag, 1000 concurrent,
# bulk with checksums, request/response, refused and timed-out probes); a
# pinned bpf_link and a process-held one on the run's cgroups; and after
# rm_teardown nothing of the run is left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rm_init harness_selftest
TCP=$(rm_tool rm-tcp)
BPF_LINK=$(rm_tool rm-bpf-link)

rm_node n1
rm_node n2
rm_bridge
rm_pod n1 a1
rm_pod n1 a2
rm_pod n2 b1
rm_pod n2 b2 198.18.2.99

rm_case topology_addresses
rm_assert_eq "$(rm_pod_ip a1)" 198.18.1.10 "first pod IP on n1"
rm_assert_eq "$(rm_pod_ip b1)" 198.18.2.10 "first pod IP on n2"
rm_assert_eq "$(rm_node_ip n2)" 198.19.0.2 "bridge address of n2"
rm_assert_eq "$(rm_node_cgroup n1)" "$RM_CG/n1/pods" "node cgroup (BPF attach point)"
rm_assert_eq "$(rm_node_system_cgroup n1)" "$RM_CG/n1/system" "node system cgroup"
rm_assert_eq "$(rm_pod_netns_path a1)" "/run/netns/${RM_NS_PREFIX}a1" "pod netns path"
[[ -d $(rm_node_pindir n2) ]] || rm_fail "pin dir of n2 missing"
rm_pass

rm_case exec_in_pod_netns_and_cgroup
cg_line=$(rm_exec a1 cat /proc/self/cgroup | grep '^0::')
rm_assert_eq "$cg_line" "0::$(rm_pod_cgroup a1 | sed "s|^$RM_CG2||")" "cgroup seen by rm_exec a1"
ns_seen=$(rm_exec a1 readlink /proc/self/ns/net)
rm_assert_eq "$ns_seen" "net:[$(stat -L -c %i "$(rm_pod_netns_path a1)")]" "netns seen by rm_exec a1"
rm_exec a1 ip -4 -o addr show dev eth0 | grep " $(rm_pod_ip a1)/32 " >/dev/null || rm_fail "a1 has no $(rm_pod_ip a1)/32"
# the test's own shell never moves
if grep -q "^0::${RM_CG#"$RM_CG2"}" /proc/$$/cgroup; then
  rm_fail "the test shell ended up inside the run cgroup"
fi
rc=0
rm_exec a1 sh -c 'exit 7' || rc=$?
rm_assert_eq "$rc" 7 "exit code through rm_exec"
rm_pass

rm_case exec_in_node
cg_line=$(rm_exec_node n2 cat /proc/self/cgroup | grep '^0::')
rm_assert_eq "$cg_line" "0::${RM_CG#"$RM_CG2"}/n2/system" "cgroup seen by rm_exec_node n2"
ns_seen=$(rm_exec_node n2 readlink /proc/self/ns/net)
rm_assert_eq "$ns_seen" "net:[$(stat -L -c %i "$(rm_node_netns_path n2)")]" "netns seen by rm_exec_node n2"
[[ -d /sys/fs/bpf && $(rm_exec_node n2 stat -f -c %T "$(rm_node_pindir n2)") == bpf_fs ]] ||
  rm_fail "bpffs not visible inside the node netns"
rm_pass

# Servers: a tag server in every pod, echo on b1, sink-source on b2.
declare -A srv=()
for p in a1 a2 b1 b2; do
  srv[$p]=$(rm_spawn "$p" "$TCP" serve --listen "$(rm_pod_ip "$p"):8080" --tag "$p" --deadline-ms 300000)
done
echo_pid=$(rm_spawn b1 "$TCP" serve --listen "$(rm_pod_ip b1):9001" --tag b1e --mode echo --deadline-ms 300000)
sink_pid=$(rm_spawn b2 "$TCP" serve --listen "$(rm_pod_ip b2):9000" --tag b2s --mode sink-source --deadline-ms 300000)
for p in a1 a2 b1 b2; do
  rm_wait_port "$p" "$(rm_pod_ip "$p")" 8080 10 || rm_fail "tag server in $p not listening"
done
rm_wait_port b1 "$(rm_pod_ip b1)" 9001 10 || rm_fail "echo server not listening"
rm_wait_port b2 "$(rm_pod_ip b2)" 9000 10 || rm_fail "sink-source server not listening"

rm_case spawn_in_pod_cgroup
rm_assert_eq "$(grep '^0::' "/proc/${srv[b2]}/cgroup")" "0::${RM_CG#"$RM_CG2"}/n2/pods/b2" "cgroup of spawned server"
rm_assert_eq "$(readlink "/proc/${srv[b2]}/ns/net")" \
  "net:[$(stat -L -c %i "$(rm_pod_netns_path b2)")]" "netns of spawned server"
rm_pass

rm_case tcp_same_node
out=$(rm_exec a1 "$TCP" connect --to "$(rm_pod_ip a2):8080" --count 50 --parallel 10)
rm_assert_eq "$(rm_json tags.a2 <<<"$out")" 50 "tags from a2 ($out)"
rm_pass tcp_same_node "$(rm_json max_ms <<<"$out") ms max"

rm_case tcp_cross_node
out=$(rm_exec a1 "$TCP" connect --to "$(rm_pod_ip b1):8080" --count 50 --parallel 10)
rm_assert_eq "$(rm_json tags.b1 <<<"$out")" 50 "tags from b1 ($out)"
out=$(rm_exec b2 "$TCP" connect --to "$(rm_pod_ip a2):8080" --count 50 --parallel 10)
rm_assert_eq "$(rm_json tags.a2 <<<"$out")" 50 "tags from a2 seen by b2 ($out)"
rm_pass

rm_case tcp_node_to_pod
out=$(rm_exec_node n1 "$TCP" connect --to "$(rm_pod_ip b2):8080" --count 5)
rm_assert_eq "$(rm_json tags.b2 <<<"$out")" 5 "tags from b2 seen by node n1 ($out)"
rm_pass

rm_case tcp_1000_concurrent_cross_node
out=$(rm_exec a1 "$TCP" connect --to "$(rm_pod_ip b2):8080" --count 1000 --parallel 1000 --hold-ms 200 \
  --timeout-ms 10000)
rm_assert_eq "$(rm_json ok <<<"$out")" 1000 "established ($out)"
rm_assert_eq "$(rm_json peak_open <<<"$out")" 1000 "held open together ($out)"
rm_pass tcp_1000_concurrent_cross_node "max $(rm_json max_ms <<<"$out") ms"

rm_case bulk_cross_node
out=$(rm_exec a2 "$TCP" bulk --to "$(rm_pod_ip b2):9000" --bytes 16MiB)
rm_assert_eq "$(rm_json ok <<<"$out")" true "bulk result ($out)"
sent_sha=$(rm_json sent_sha256 <<<"$out")
server_line=$(grep '"event":"sink"' "$(rm_spawn_log "$sink_pid")" | tail -n 1)
rm_assert_eq "$(rm_json sha256 <<<"$server_line")" "$sent_sha" "server's hash of what it received"
rm_assert_eq "$(rm_json received <<<"$server_line")" $((16 << 20)) "bytes the server received"
rm_pass bulk_cross_node "$(rm_json mbit_per_s <<<"$out") Mbit/s"

rm_case rr_cross_node
out=$(rm_exec a1 "$TCP" rr --to "$(rm_pod_ip b1):9001" --size 64 --count 200)
rm_assert_eq "$(rm_json count <<<"$out")" 200 "round trips ($out)"
rm_assert_eq "$(rm_json mismatches <<<"$out")" 0 "echo mismatches"
rm_pass rr_cross_node "p50 $(rm_json p50_us <<<"$out") us"

rm_case stop_a_spawned_process
rm_stop "$echo_pid"
[[ ! -e /proc/$echo_pid || $(awk '{sub(/.*\) /, ""); print $1}' "/proc/$echo_pid/stat") == Z ]] ||
  rm_fail "echo server $echo_pid still running after rm_stop"
grep '"reason":"SIGTERM"' "$(rm_spawn_log "$echo_pid")" >/dev/null || rm_fail "echo server did not exit on SIGTERM"
rm_pass

rm_case probe_refused
out=$(rm_exec a1 "$TCP" probe --to "$(rm_pod_ip b1):9999" --timeout-ms 1000 --expect ECONNREFUSED)
rm_assert_between "$(rm_json ms <<<"$out")" 0 1000 "ms to refusal"
rm_pass

rm_case probe_timeout_is_bounded
# A black hole without nftables: n2 sends 198.18.2.250 to a next hop on the
# bridge that does not exist, so the SYN waits for an ARP answer that never
# comes (the host-unreachable error would only arrive after ~3 s).
ip -n "$(rm_node_netns n2)" route add 198.18.2.250/32 via 198.19.0.250 dev eth0
out=$(rm_exec a1 "$TCP" probe --to 198.18.2.250:80 --timeout-ms 300 --expect ETIMEDOUT)
rm_assert_between "$(rm_json ms <<<"$out")" 290 2000 "ms to ETIMEDOUT"
rm_pass

rm_case deadline_bounds_a_client
rc=0
out=$(rm_exec a1 "$TCP" connect --to 198.18.2.250:80 --count 3 --timeout-ms 60000 --deadline-ms 500) || rc=$?
rm_assert_eq "$rc" 124 "exit code at the deadline ($out)"
rm_assert_eq "$(rm_json deadline_exceeded <<<"$out")" true "deadline flag"
rm_assert_between "$(rm_json elapsed_ms <<<"$out")" 450 3000 "elapsed ms"
rm_pass

rm_case bpf_links_on_run_cgroups
link=$("$BPF_LINK" --cgroup "$(rm_node_cgroup n1)" --pin "$(rm_node_pindir n1)/allow_link")
pinned_link_id=$(rm_json link_id <<<"$link")
bpftool link show id "$pinned_link_id" >/dev/null || rm_fail "pinned link $pinned_link_id not found"
held_pid=$(rm_spawn n2:system "$BPF_LINK" --cgroup "$(rm_node_cgroup n2)" --hold)
held_link_id=""
for ((i = 0; i < 100; i++)); do
  held_link_id=$(rm_json --default "" link_id <"$(rm_spawn_log "$held_pid")" 2>/dev/null || true)
  [[ -z $held_link_id ]] || break
  sleep 0.05
done
[[ -n $held_link_id ]] || rm_fail "the holding process printed no link id"
bpftool cgroup tree "$RM_CG" | grep rm_test_allow >/dev/null || rm_fail "bpftool cgroup tree shows no attachment"
# the allow-all program changes nothing for the pods under it
out=$(rm_exec a1 "$TCP" connect --to "$(rm_pod_ip b1):8080" --count 5)
rm_assert_eq "$(rm_json tags.b1 <<<"$out")" 5 "connects under the attached program ($out)"
map_pin="$(rm_node_pindir n2)/scratch_map"
bpftool map create "$map_pin" type array key 4 value 4 entries 1 name rmt_scratch
map_id=$(bpftool -j map show pinned "$map_pin" | rm_json id)
rm_pass

# Teardown explicitly, then look for every trace by hand.
rm_case nothing_left_after_teardown
pids="${srv[*]} $sink_pid $held_pid"  # the echo server was stopped above
declare -A starttime=()
for pid in $pids; do
  starttime[$pid]=$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$pid/stat")
done
ns_prefix=$RM_NS_PREFIX cg=$RM_CG pinroot=$RM_PINROOT tmp=$RM_TMP
rm_teardown || rm_fail "rm_teardown reported leaks"
left=""
if ip netns list | grep "^$ns_prefix" >/dev/null; then
  left+=" netns:$(ip netns list | grep "^$ns_prefix" | tr '\n' ' ')"
fi
[[ ! -e $cg ]] || left+=" cgroup:$cg"
[[ ! -e $pinroot ]] || left+=" pins:$pinroot"
[[ ! -e $tmp ]] || left+=" tmp:$tmp"
# A process is left if it still lives (same start time, not a zombie) 5 s
# after teardown: rm_teardown waited for what it stopped, but an exit can
# still be finishing when it returns (ASan's is slow), and /proc/PID/stat
# may vanish between two reads, so it is read once per look.
still_there() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local -a f=(${stat##*) })
  [[ ${f[19]} == "${starttime[$1]}" && ${f[0]} != Z ]]
}
lingering=""
for ((i = 0; i < 50; i++)); do
  lingering=""
  for pid in $pids; do
    if still_there "$pid"; then lingering+=" $pid"; fi
  done
  [[ -n $lingering ]] || break
  sleep 0.1
done
for pid in $lingering; do left+=" process:$pid"; done
for ((i = 0; i < 30; i++)); do
  bpftool link show id "$pinned_link_id" >/dev/null 2>&1 ||
    bpftool link show id "$held_link_id" >/dev/null 2>&1 ||
    bpftool map show id "$map_id" >/dev/null 2>&1 || break
  sleep 0.1
done
! bpftool link show id "$pinned_link_id" >/dev/null 2>&1 || left+=" bpf_link:$pinned_link_id"
! bpftool link show id "$held_link_id" >/dev/null 2>&1 || left+=" bpf_link:$held_link_id"
! bpftool map show id "$map_id" >/dev/null 2>&1 || left+=" bpf_map:$map_id"
[[ -z $left ]] || rm_fail "left after teardown:$left"
rm_pass
