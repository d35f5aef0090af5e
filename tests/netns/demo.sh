#!/usr/bin/env bash
# The main job: a one-node namespace cluster meshed by ringmesh, traffic
# through the proxy, and ringmeshctl's view of it. Everything is torn down
# at the end (and on any failure or interrupt).
#   client  enrolled pod    -> service web (VIP 198.18.200.10:80) -> b1, b2
#   other   not enrolled    -> connects straight to b1, never redirected
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/mesh.sh"

rm_init demo
mesh_init
rm_node n1
for p in client other b1 b2; do rm_pod n1 "$p"; done
VIP=198.18.200.10
nodefile=$RM_TMP/node.yaml
cat >"$nodefile" <<YAML
pods:
  - {namespace: shop, name: client, netns: $(rm_pod_netns_path client), ips: [$(rm_pod_ip client)], serviceAccount: client}
  - {namespace: shop, name: other, netns: $(rm_pod_netns_path other), ips: [$(rm_pod_ip other)], mode: disabled}
  - {namespace: shop, name: web-1, ips: [$(rm_pod_ip b1)], mode: disabled}
  - {namespace: shop, name: web-2, ips: [$(rm_pod_ip b2)], mode: disabled}
services:
  - namespace: shop
    name: web
    vips: [$VIP]
    ports: [{name: tag, port: 80, targetPort: 8080}, {name: echo, port: 81, targetPort: 8081},
            {name: bulk, port: 82, targetPort: 9000}]
    endpoints: [{ip: $(rm_pod_ip b1), pod: shop/web-1}, {ip: $(rm_pod_ip b2), pod: shop/web-2}]
YAML
for b in b1 b2; do
  rm_spawn $b "$RM_TCP" --deadline-ms 900000 serve --listen "$(rm_pod_ip $b):8080" --tag "web-${b#b}" >/dev/null
  rm_spawn $b "$RM_TCP" --deadline-ms 900000 serve --listen "$(rm_pod_ip $b):8081" --tag "web-${b#b}" --mode echo >/dev/null
  rm_spawn $b "$RM_TCP" --deadline-ms 900000 serve --listen "$(rm_pod_ip $b):9000" --tag "web-${b#b}" --mode sink-source >/dev/null
  for port in 8080 8081 9000; do rm_wait_port $b "$(rm_pod_ip $b)" $port 5; done
done
mesh_start_agent n1 "$nodefile"
mesh_start_proxy n1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "node n1: pods"
printf '  %-8s %s\n' client "$(rm_pod_ip client) (enrolled)" other "$(rm_pod_ip other) (not enrolled)" \
  b1 "$(rm_pod_ip b1) (web-1)" b2 "$(rm_pod_ip b2) (web-2)"

say "client -> $VIP:80, 100 connections (redirected by connect4 to the proxy in the client's netns; web-1 and web-2 are not enrolled, so this short route has no socket LB)"
out=$(rm_exec client "$RM_TCP" connect --to "$VIP:80" --count 100 --parallel 4)
echo "  $out"
say "other -> $(rm_pod_ip b1):8080 directly, 20 connections (not enrolled: not redirected)"
out=$(rm_exec other "$RM_TCP" connect --to "$(rm_pod_ip b1):8080" --count 20 --parallel 4)
echo "  $out"
say "client -> $VIP:82, 64 MiB each way, SHA-256 checked at both ends"
out=$(rm_exec client "$RM_TCP" bulk --to "$VIP:82" --bytes 64MiB)
echo "  $out"

hold=$(rm_spawn client "$RM_TCP" connect --to "$VIP:81" --count 4 --parallel 4 --hold-ms 3000 --connect-only)
for ((i = 0; i < 40; i++)); do
  [[ $(mesh_admin n1 /connections | tr -d ' \n') != '[]' ]] && break
  sleep 0.05
done

say "ringmeshctl status"
mesh_ctl n1 status || true
say "ringmeshctl workloads"
mesh_ctl n1 workloads
say "ringmeshctl services"
mesh_ctl n1 services
say "ringmeshctl connections (4 held open)"
mesh_ctl n1 connections
say "ringmeshctl bpf"
mesh_ctl n1 bpf
wait "$hold" 2>/dev/null || true
say "tearing down"
