#!/usr/bin/env bash
# Cross-node mTLS (HBONE) end to end: an enrolled pod on n1 reaches a
# service whose endpoint is an enrolled pod on n2. n1's proxy tunnels the
# connection (TLS 1.3, HTTP/2 CONNECT, the client pod's certificate, the
# server pod's identity checked) to <pod IP>:15008, where n2's proxy
# answers with the server pod's certificate and connects to the app. A
# capture on the bridge sees TLS records to port 15008 and never the
# payload's marker bytes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/mesh.sh"
source "$here/ca.sh"

backend=io_uring
while (($#)); do
  case $1 in
    --io-backend) backend=$2; shift 2 ;;
    *) echo "usage: $0 [--io-backend io_uring|epoll]" >&2; exit 2 ;;
  esac
done
rm_init "hbone_cross_node_$backend"
mesh_init
command -v openssl >/dev/null || rm_skip "openssl CLI missing"
rm_node n1
rm_node n2
rm_pod n1 client
rm_pod n2 b1
rm_pod n2 c2
rm_bridge
B1=$(rm_pod_ip b1)
VIP=198.18.200.30

ca=$RM_TMP/ca
ca_make "$ca" mesh
cat >"$RM_TMP/n1.yaml" <<YAML
pods:
  - {namespace: shop, name: client, serviceAccount: web, netns: $(rm_pod_netns_path client), ips: [$(rm_pod_ip client)]}
  - {namespace: shop, name: b1, serviceAccount: api, node: n2, ips: [$B1]}
services:
  - namespace: shop
    name: api
    vips: [$VIP]
    ports: [{name: echo, port: 80, targetPort: 8080}, {name: bulk, port: 81, targetPort: 9000}]
    endpoints: [{ip: $B1}]
YAML
# n2: b1, and c2, a client on b1's own node; $1: authorizationPolicies.
write_n2() {
  cat >"$RM_TMP/n2.yaml.new" <<YAML
pods:
  - {namespace: shop, name: b1, serviceAccount: api, netns: $(rm_pod_netns_path b1), ips: [$B1]}
  - {namespace: shop, name: c2, serviceAccount: web, netns: $(rm_pod_netns_path c2), ips: [$(rm_pod_ip c2)]}
services:
  - namespace: shop
    name: api
    vips: [$VIP]
    ports: [{name: echo, port: 80, targetPort: 8080}, {name: bulk, port: 81, targetPort: 9000}]
    endpoints: [{ip: $B1}]
authorizationPolicies: ${1:-[]}
YAML
  mv "$RM_TMP/n2.yaml.new" "$RM_TMP/n2.yaml"
}
write_n2
rm_spawn b1 "$RM_TCP" --deadline-ms 200000 serve --listen "$B1:8080" --tag b1 --mode echo >/dev/null
rm_spawn b1 "$RM_TCP" --deadline-ms 200000 serve --listen "$B1:9000" --tag b1 --mode sink-source >/dev/null
rm_wait_port b1 "$B1" 8080 5
rm_wait_port b1 "$B1" 9000 5
certs=(--ca-cert "$ca/ca.pem" --ca-key "$ca/ca-key.pem" --trust-bundle "$ca/root.pem")
for n in n1 n2; do
  mesh_start_agent "$n" "$RM_TMP/$n.yaml"
  mesh_start_proxy "$n" --io-backend "$backend" "${certs[@]}"
done
ready() { mesh_ctl "$1" -o json certs | grep -q '"state":"ready"'; }
mesh_wait_for "n1's client certificate" 10 ready n1
mesh_wait_for "n2's server certificate" 10 ready n2
listening() { rm_exec b1 ss -Htln "sport = :15008" | grep -q "$B1:15008"; }
mesh_wait_for "n2's HBONE listener in b1" 10 listening

rm_case bulk_64MiB_each_way_through_the_tunnel
out=$(rm_exec client "$RM_TCP" bulk --to "$VIP:81" --bytes 64MiB --idle-ms 20000) ||
  rm_fail "bulk through the tunnel: $out; n1: $(mesh_metric n1 ringmesh_proxy_connections_closed_total) closed, $(mesh_admin n1 /metrics | grep -E 'closed_total.* [1-9]|hbone' | tr '\n' ' ')"
rm_assert_eq "$(rm_json received <<<"$out")" 67108864 "reply bytes"
rm_assert_eq "$(rm_json received_sha256 <<<"$out")" "$(rm_json expected_reply_sha256 <<<"$out")" "reply sha256"
(($(mesh_metric n1 ringmesh_hbone_outbound_streams_total) >= 1)) || rm_fail "n1 sent no tunnel stream"
(($(mesh_metric n2 ringmesh_hbone_inbound_streams_total) >= 1)) || rm_fail "n2 accepted no tunnel stream"
rm_pass bulk_64MiB_each_way_through_the_tunnel

rm_case capture_sees_tls_to_15008_never_the_payload
marker=RINGMESH-PLAINTEXT-MARKER-$RANDOM$RANDOM
capture=$RM_TMP/capture.json
# An AF_PACKET reader in the bridge's namespace (no tcpdump on the machine): counts TCP
# segments to or from port 15008 whose payload starts a TLS record, and
# whether any frame holds the marker.
ip netns exec "$(rm_bridge_netns)" timeout 30 python3 - "$marker" "$capture" <<'PY' &
import json, socket, struct, sys, time
marker, out = sys.argv[1].encode(), sys.argv[2]
# Unbound: every interface of the bridge's namespace (frames between two
# bridge ports never pass br0 itself).
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.settimeout(0.2)
tls = seen = frames = 0
end = time.time() + 8
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    frames += 1
    if marker in f:
        seen += 1
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        continue
    ihl = (f[14] & 0x0F) * 4
    if f[23] != 6:
        continue
    t = 14 + ihl
    sport, dport = struct.unpack("!HH", f[t:t + 4])
    payload = f[t + ((f[t + 12] >> 4) * 4):]
    if 15008 in (sport, dport) and len(payload) >= 3 and payload[0] in (0x16, 0x17) and payload[1] == 3:
        tls += 1
json.dump({"frames": frames, "tls_records_15008": tls, "marker_frames": seen}, open(out, "w"))
PY
capturer=$!
sleep 1
for i in 1 2 3; do
  rm_exec client python3 - "$VIP" "$marker" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
m = sys.argv[2].encode() * 64
s.sendall(m)
got = b""
while len(got) < len(m):
    b = s.recv(65536)
    if not b:
        break
    got += b
assert got == m, "echo differs"
PY
done
wait "$capturer" || true
rm_log "capture: $(cat "$capture")"
(($(rm_json tls_records_15008 <"$capture") > 0)) || rm_fail "no TLS record to or from port 15008 on the bridge"
rm_assert_eq "$(rm_json marker_frames <"$capture")" 0 "frames on the bridge holding the plaintext marker"
rm_pass capture_sees_tls_to_15008_never_the_payload

rm_case authorization_policies_at_the_destination
# b1's AuthorizationPolicies are enforced by n2's proxy: for the tunnel
# from n1 (the CONNECT gets 401, the client's connection ends) and for c2
# on b1's own node (reset before any byte reaches b1).
# probe POD PORT: echo (the ping came back), data (other bytes), closed
# (EOF or reset), timeout.
probe() {
  rm_exec "$1" python3 - "$VIP" "$2" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"ping")
    d = s.recv(16)
    print("echo" if d == b"ping" else ("data" if d else "closed"))
except socket.timeout:
    print("timeout")
except OSError:
    print("closed")
PY
}
# Waits until both clients see $1 on port $2.
both_see() { [[ $(probe client "$2") == "$1" && $(probe c2 "$2") == "$1" ]]; }
rm_assert_eq "$(probe client 80) $(probe c2 80)" "echo echo" "echo from both clients before any policy"
hbone0=$(mesh_metric n2 ringmesh_proxy_authz_denied_total 'path="hbone"')
local0=$(mesh_metric n2 ringmesh_proxy_authz_denied_total 'path="local"')
principal() { echo "cluster.local/ns/shop/sa/$1"; }
# ALLOW naming another principal: both are out.
write_n2 "[{metadata: {namespace: shop, name: only-other}, spec: {action: ALLOW, rules: [{from: [{source: {principals: [$(principal other)]}}]}]}}]"
mesh_wait_for "both clients denied by an ALLOW for another principal" 10 both_see closed 80
(($(mesh_metric n2 ringmesh_proxy_authz_denied_total 'path="hbone"') > hbone0)) || rm_fail "tunnel denial not counted"
(($(mesh_metric n2 ringmesh_proxy_authz_denied_total 'path="local"') > local0)) || rm_fail "same-node denial not counted"
# ALLOW naming theirs: both in.
write_n2 "[{metadata: {namespace: shop, name: web-in}, spec: {action: ALLOW, rules: [{from: [{source: {principals: [$(principal web)]}}]}]}}]"
mesh_wait_for "both clients allowed by an ALLOW for their principal" 10 both_see echo 80
# A DENY by namespace wins over that ALLOW.
write_n2 "[{metadata: {namespace: shop, name: web-in}, spec: {action: ALLOW, rules: [{from: [{source: {principals: [$(principal web)]}}]}]}}, {metadata: {namespace: istio-system, name: no-shop}, spec: {action: DENY, rules: [{from: [{source: {namespaces: [shop]}}]}]}}]"
mesh_wait_for "DENY by namespace wins over ALLOW" 10 both_see closed 80
# ringmeshctl policies: evaluation order (DENY first), the pods of n2 each
# applies to (the root namespace's reaches every namespace), the denials.
out=$(mesh_ctl n2 -o json policies)
rm_log "policies: $out"
rm_assert_eq "$(rm_json policies.0.name <<<"$out") $(rm_json policies.0.action <<<"$out")" "no-shop DENY" "first policy"
rm_assert_eq "$(rm_json policies.0.applies_to <<<"$out")" '["shop/b1", "shop/c2"]' "pods the DENY applies to"
rm_assert_eq "$(rm_json policies.1.name <<<"$out") $(rm_json policies.1.action <<<"$out")" "web-in ALLOW" "second policy"
rm_assert_eq "$(rm_json denied.local <<<"$out")" "$(mesh_metric n2 ringmesh_proxy_authz_denied_total 'path="local"')" \
  "denials shown = the metric"
mesh_ctl n2 policies | grep -q "^istio-system  *no-shop  *DENY  *(all)" || rm_fail "table: $(mesh_ctl n2 policies)"
# A port rule: only b1's 9000 (the service's port 81) is denied.
write_n2 "[{metadata: {namespace: shop, name: no-bulk}, spec: {action: DENY, rules: [{to: [{operation: {ports: [\"9000\"]}}]}]}}]"
mesh_wait_for "port 9000 denied" 10 both_see closed 81
rm_assert_eq "$(probe client 80) $(probe c2 80)" "echo echo" "port 8080 still allowed"
write_n2
mesh_wait_for "no policy: allowed again" 10 both_see echo 80
rm_pass authorization_policies_at_the_destination

rm_case wrong_destination_identity_refused
# n1 believes b1 runs as another service account: the server's certificate
# does not match, the tunnel is refused, and the client's connection ends
# at once instead of carrying bytes.
echo_once() {
  rm_exec client python3 - "$VIP" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 80), timeout=5)
    s.sendall(b"ping")
    print("ok" if s.recv(16) == b"ping" else "failed")
except OSError:
    print("failed")
PY
}
rm_assert_eq "$(echo_once)" ok "an echo through the tunnel before the change"
before=$(mesh_metric n1 ringmesh_hbone_outbound_tls_failures_total)
sed -i 's/serviceAccount: api, node: n2/serviceAccount: not-api, node: n2/' "$RM_TMP/n1.yaml"
refused() { [[ $(echo_once) == failed ]]; }
mesh_wait_for "connections refused once n1 expects another identity" 10 refused
(($(mesh_metric n1 ringmesh_hbone_outbound_tls_failures_total) > before)) || rm_fail "the refusal was not counted"
rm_pass wrong_destination_identity_refused
