#!/usr/bin/env bash
# Inbound HBONE on the real data path: with workload certificates, the
# proxy listens on <pod IP>:15008 inside each enrolled pod's namespace and
# answers mTLS (TLS 1.3, h2) with the pod's SPIFFE certificate. Node.js's
# http2 (an implementation not written here), from a pod that is not in the
# mesh, opens CONNECT to the pod's app port and pushes bytes through; the
# proxy connects to the app inside the pod's namespace. Refusals: a CONNECT
# to an address the pod does not have (400), a client certificate of another
# trust domain or of an unknown CA (handshake refused, counted by reason).
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
rm_init "hbone_inbound_$backend"
mesh_init
command -v node >/dev/null || rm_skip "node (Debian nodejs) missing: scripts/deps installs it"
command -v openssl >/dev/null || rm_skip "openssl CLI missing"
rm_node n1
for p in server outside; do rm_pod n1 "$p"; done
SERVER_IP=$(rm_pod_ip server)

ca=$RM_TMP/ca
ca_make "$ca" mesh
ca_leaf "$ca" client spiffe://cluster.local/ns/other/sa/client
ca_leaf "$ca" foreign spiffe://evil.example/ns/other/sa/client
other=$RM_TMP/other-ca
ca_make "$other" stranger
ca_leaf "$other" stranger spiffe://cluster.local/ns/other/sa/client

nodefile=$RM_TMP/node.yaml
cat >"$nodefile" <<YAML
pods:
  - {namespace: shop, name: server, serviceAccount: api, netns: $(rm_pod_netns_path server), ips: [$SERVER_IP]}
services: []
YAML
rm_spawn server "$RM_TCP" --deadline-ms 200000 serve --listen "$SERVER_IP:8080" --tag server --mode echo >/dev/null
rm_wait_port server "$SERVER_IP" 8080 5
mesh_start_agent n1 "$nodefile"
mesh_start_proxy n1 --io-backend "$backend" --ca-cert "$ca/ca.pem" --ca-key "$ca/ca-key.pem" --trust-bundle "$ca/root.pem"
SERVER_ID=spiffe://cluster.local/ns/shop/sa/api
has_cert() { mesh_ctl n1 -o json certs | grep -q '"state":"ready"'; }
mesh_wait_for "the server pod's certificate" 10 has_cert
listening() { rm_exec server ss -Htln "sport = :15008" | grep -q "$SERVER_IP:15008"; }
mesh_wait_for "the HBONE listener on $SERVER_IP:15008" 10 listening

hbone() {  # CERT_DIR CERT_NAME TARGET BYTES (the client trusts the mesh's root)
  rm_exec outside node "$here/hbone_client.js" "$SERVER_IP" 15008 "$ca/root.pem" "$1/$2.pem" "$1/$2.key" "$3" "$4" \
    "$SERVER_ID" 2>&1 || true
}
failures() { mesh_metric n1 ringmesh_hbone_inbound_failures_total "reason=\"$1\""; }

rm_case tunnel_echo_64MiB
out=$(hbone "$ca" client "$SERVER_IP:8080" $((64 << 20)))
rm_log "node: $out"
rm_assert_eq "$(rm_json status <<<"$out")" 200 "CONNECT answered"
rm_assert_eq "$(rm_json echo_ok <<<"$out")" true "64 MiB up and back with equal SHA-256"
streams=$(mesh_metric n1 ringmesh_hbone_inbound_streams_total)
((streams >= 1)) || rm_fail "no inbound stream counted"
rm_pass tunnel_echo_64MiB

rm_case connect_to_an_address_not_served_is_400
out=$(hbone "$ca" client "198.18.250.1:8080" 16)
rm_assert_eq "$(rm_json status <<<"$out")" 400 "CONNECT to an address the pod does not have"
rm_pass connect_to_an_address_not_served_is_400

rm_case app_not_listening_is_503
out=$(hbone "$ca" client "$SERVER_IP:9" 16)
rm_assert_eq "$(rm_json status <<<"$out")" 503 "CONNECT to a closed port of the pod"
rm_pass app_not_listening_is_503

rm_case wrong_trust_domain_refused
before=$(failures tls_wrong_trust_domain)
out=$(hbone "$ca" foreign "$SERVER_IP:8080" 16)
[[ $(rm_json --default none status <<<"$out") != 200 ]] || rm_fail "a client of another trust domain got through: $out"
counted() { (($(failures tls_wrong_trust_domain) > before)); }
mesh_wait_for "the refusal counted as tls_wrong_trust_domain" 5 counted
rm_pass wrong_trust_domain_refused

rm_case unknown_ca_refused
before=$(failures tls_unknown_ca)
out=$(hbone "$other" stranger "$SERVER_IP:8080" 16)
[[ $(rm_json --default none status <<<"$out") != 200 ]] || rm_fail "a client of an unknown CA got through: $out"
counted() { (($(failures tls_unknown_ca) > before)); }
mesh_wait_for "the refusal counted as tls_unknown_ca" 5 counted
rm_pass unknown_ca_refused

rm_case garbage_and_plaintext_h2_are_dropped
before_conns=$(mesh_metric n1 ringmesh_hbone_inbound_connections_total)
rm_exec outside python3 - "$SERVER_IP" <<'PY'
import socket, sys
for payload in (b"\x00garbage\xff" * 100, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
    s = socket.create_connection((sys.argv[1], 15008), timeout=5)
    s.sendall(payload)
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
PY
after_conns=$(mesh_metric n1 ringmesh_hbone_inbound_connections_total)
rm_assert_eq "$((after_conns - before_conns))" 2 "both connections reached the tunnel listener"
drained() { [[ $(mesh_metric n1 ringmesh_proxy_connections_active) == 0 ]]; }
mesh_wait_for "nothing left open after garbage" 10 drained
# The proxy still serves a good client afterwards.
out=$(hbone "$ca" client "$SERVER_IP:8080" 4096)
rm_assert_eq "$(rm_json echo_ok <<<"$out")" true "a good client after the garbage"
rm_pass garbage_and_plaintext_h2_are_dropped
