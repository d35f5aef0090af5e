#!/usr/bin/env bash
# Workload identities on a node: the proxy, given a CA made here with the
# openssl CLI (a root and an intermediate, as a cluster admin would make
# them), holds one certificate per identity of its enrolled pods
# (spiffe://cluster.local/ns/<ns>/sa/<sa>), renews it at half-life, drops
# it when the pod leaves, and shows all of it in `ringmeshctl certs`.
# Traffic keeps flowing meanwhile.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/mesh.sh"
source "$here/ca.sh"

rm_init identity
mesh_init
command -v openssl >/dev/null || rm_skip "openssl CLI missing"
rm_node n1
for p in web api b1; do rm_pod n1 "$p"; done

# The CA: a root, and an intermediate that issues (what --ca-cert takes).
ca=$RM_TMP/ca
ca_make "$ca" n1

VIP=198.18.200.20
nodefile=$RM_TMP/node.yaml
write_nodefile() {  # pods...
  {
    echo "pods:"
    local p
    for p in "$@"; do
      local sa=${p#*:} name=${p%%:*}
      echo "  - {namespace: shop, name: $name, serviceAccount: $sa, netns: $(rm_pod_netns_path "$name"), ips: [$(rm_pod_ip "$name")]}"
    done
    cat <<YAML
services:
  - namespace: shop
    name: backend
    vips: [$VIP]
    ports: [{port: 80, targetPort: 8080}]
    endpoints: [{ip: $(rm_pod_ip b1)}]
YAML
  } >"$nodefile.tmp"
  mv "$nodefile.tmp" "$nodefile"
}
write_nodefile web:web api:api-sa
rm_spawn b1 "$RM_TCP" --deadline-ms 120000 serve --listen "$(rm_pod_ip b1):8080" --tag b1 >/dev/null
rm_wait_port b1 "$(rm_pod_ip b1)" 8080 5
mesh_start_agent n1 "$nodefile"
mesh_start_proxy n1 --ca-cert "$ca/ca.pem" --ca-key "$ca/ca-key.pem" --trust-bundle "$ca/root.pem" --cert-ttl-s 6

certs() { mesh_ctl n1 -o json certs; }
ident_field() {  # IDENTITY FIELD
  certs | python3 -c '
import json, sys
want, field = sys.argv[1], sys.argv[2]
for c in json.loads(sys.stdin.read())["identities"]:
    if c["identity"] == want:
        v = c[field]
        print(",".join(v) if isinstance(v, list) else v)
        sys.exit(0)
print("absent")' "$1" "$2"
}
WEB=spiffe://cluster.local/ns/shop/sa/web
API=spiffe://cluster.local/ns/shop/sa/api-sa

rm_case issued_for_enrolled_pods
ready() { [[ $(ident_field "$WEB" state) == ready && $(ident_field "$API" state) == ready ]]; }
mesh_wait_for "both identities ready" 10 ready
rm_assert_eq "$(certs | rm_json trust_domain)" cluster.local "trust domain"
rm_assert_eq "$(ident_field "$WEB" pods)" shop/web "pods of the web identity"
issuer=$(ident_field "$WEB" issuer)
[[ $issuer == *n1-intermediate* ]] || rm_fail "issuer is not the intermediate: $issuer"
mesh_ctl n1 certs | grep -q "$WEB" || rm_fail "ringmeshctl certs (table) does not list $WEB"
rm_pass issued_for_enrolled_pods

rm_case renewed_at_half_life_with_traffic
serial0=$(ident_field "$WEB" serial)
out=$(rm_exec web "$RM_TCP" --deadline-ms 20000 connect --to "$VIP:80" --count 20 --parallel 2 --timeout-ms 5000)
rm_assert_eq "$(rm_json ok <<<"$out")" 20 "connections through the proxy"
renewed() { [[ $(ident_field "$WEB" serial) != "$serial0" ]]; }
mesh_wait_for "the web certificate renewed (6 s lifetime)" 15 renewed
((  $(ident_field "$WEB" renewals) >= 1 )) || rm_fail "renewals not counted"
rm_pass renewed_at_half_life_with_traffic

rm_case dropped_when_the_pod_leaves
write_nodefile web:web
gone() { [[ $(ident_field "$API" state) == absent ]]; }
mesh_wait_for "the api identity dropped" 10 gone
rm_assert_eq "$(ident_field "$WEB" state)" ready "the web identity stays"
rm_pass dropped_when_the_pod_leaves

rm_case bad_ca_is_a_clear_error
bad=$(rm_spawn n1:system "$MESH_PROXY" --admin-socket "$RM_TMP/bad-admin.sock" --bpf-pin-dir "$(rm_node_pindir n1)" \
  --ca-cert "$ca/ca.pem" --ca-key "$ca/root-key.pem")
exited() { ! kill -0 "$1" 2>/dev/null; }
mesh_wait_for "a proxy with a key that does not match exits" 10 exited "$bad"
grep -q "workload certificates: .*CA" "$(rm_spawn_log "$bad")" ||
  rm_fail "no clear error for a mismatched CA key: $(cat "$(rm_spawn_log "$bad")")"
rm_pass bad_ca_is_a_clear_error
