# Test certificate authorities made with the openssl CLI (an implementation
# not written here), as a cluster admin would make them. Source after lib.sh.
#   ca_make DIR NAME             root.pem/root-key.pem and the issuing
#                                intermediate ca.pem/ca-key.pem in DIR
#   ca_leaf DIR NAME SPIFFE_ID   DIR/NAME.pem (leaf + intermediate) and
#                                DIR/NAME.key, a workload certificate

ca_make() {
  local dir=$1 name=$2
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/O=ringmesh-test/CN=$name-root" -keyout "$dir/root-key.pem" -out "$dir/root.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    rm_fail "openssl: root CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=ringmesh-test/CN=$name-intermediate" \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.csr" 2>/dev/null || rm_fail "openssl: intermediate key"
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$dir/ca-ext.cnf"
  openssl x509 -req -in "$dir/ca.csr" -CA "$dir/root.pem" -CAkey "$dir/root-key.pem" -CAcreateserial -days 30 \
    -extfile "$dir/ca-ext.cnf" -out "$dir/ca.pem" 2>/dev/null || rm_fail "openssl: intermediate"
}

ca_leaf() {
  local dir=$1 name=$2 id=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=ringmesh-test" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null || rm_fail "openssl: $name key"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:%s\n' \
    "$id" >"$dir/$name-ext.cnf"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial -days 1 \
    -extfile "$dir/$name-ext.cnf" -out "$dir/$name.leaf.pem" 2>/dev/null || rm_fail "openssl: $name certificate"
  cat "$dir/$name.leaf.pem" "$dir/ca.pem" >"$dir/$name.pem"
}
