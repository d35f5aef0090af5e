#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (no cluster needed):
#   1. `kubectl kustomize deploy/daemonset` renders (kubectl is installed from
#      Debian's kubernetes-client package when missing);
#   2. every rendered object, plus deploy/cleanup/job.yaml, passes the
#      Kubernetes JSON schema, a TypeScript excess-property check (unknown
#      fields) and ringmesh's deployment rules (tests/deploy/schema/);
#   3. negative cases: copies with one defect each (an unknown field, no
#      selector, maxUnavailable 1, a privileged proxy, ...) must be rejected,
#      so the checks above are known to be able to fail;
#   4. deploy/Containerfile copies only paths that exist.
# Prints PASS/FAIL lines; exits non-zero on the first failing step.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${RINGMESH_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
schema="$here/schema"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL $*" >&2
  exit 1
}
pass() { echo "PASS $*"; }

as_root_apt_install() {
  if [[ $EUID -ne 0 ]]; then
    fail "$1 is missing and installing it needs root: apt-get install $2"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2"; } >"$tmp/apt.log" 2>&1; then
    cat "$tmp/apt.log" >&2
    fail "apt-get install $2"
  fi
}

# --- tools --------------------------------------------------------------------
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: installing Debian's kubernetes-client"
  as_root_apt_install kubectl kubernetes-client
fi
kubectl kustomize --help >/dev/null 2>&1 || fail "$(command -v kubectl) has no 'kustomize' subcommand (kubectl >= 1.14 needed)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node/npm not found: installing Debian's nodejs and npm"
  as_root_apt_install node nodejs
  as_root_apt_install npm npm
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  fail "node >= 18 needed, found $(node --version)"

# npm ci only when node_modules is missing or older than the lock file. A
# lock keeps two test runs in one tree from installing on top of each other.
(
  flock 9
  stamp="$schema/node_modules/.package-lock.json"
  if [[ ! -f "$stamp" || "$schema/package-lock.json" -nt "$stamp" ]]; then
    echo "installing the validator's npm packages (npm ci)"
    if ! (cd "$schema" && npm ci --no-audit --no-fund --loglevel=error) >"$tmp/npm.log" 2>&1; then
      cat "$tmp/npm.log" >&2
      exit 1
    fi
  fi
) 9>"/tmp/ringmesh-deploy-schema.$(id -u).lock" || fail "npm ci in $schema"

# --- 1. render --------------------------------------------------------------------
rendered="$tmp/rendered.yaml"
if ! kubectl kustomize "$root/deploy/daemonset" >"$rendered" 2>"$tmp/kustomize.err"; then
  cat "$tmp/kustomize.err" >&2
  fail "kubectl kustomize deploy/daemonset"
fi
# kustomize v5 warns that commonLabels is deprecated; the replacement
# (`labels:`) is rejected by the kustomize v2 inside Debian's kubectl 1.20.
grep -v "'commonLabels' is deprecated" "$tmp/kustomize.err" >&2 || true
[[ -s "$rendered" ]] || fail "kubectl kustomize deploy/daemonset rendered nothing"
pass "kubectl kustomize deploy/daemonset renders $(grep -c '^kind:' "$rendered") objects (kubectl $(kubectl version --client 2>/dev/null | grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' | head -1))"

job="$tmp/cleanup-job.yaml"
grep -q 'REPLACE_WITH_NODE_NAME' "$root/deploy/cleanup/job.yaml" ||
  fail "deploy/cleanup/job.yaml lost its REPLACE_WITH_NODE_NAME placeholder (docs/install.md substitutes it)"
sed 's/REPLACE_WITH_NODE_NAME/node-a/' "$root/deploy/cleanup/job.yaml" >"$job"

# --- 2. schema, types, rules --------------------------------------------------------
if node "$schema/validate.mjs" "$rendered" "$job" >"$tmp/validate.out"; then
  sed 's/^/  /' "$tmp/validate.out"
  pass "schema, unknown-field and rule checks of the rendered manifests and the cleanup Job"
else
  sed 's/^/  /' "$tmp/validate.out" >&2
  fail "schema, unknown-field and rule checks (see above)"
fi

# --- 3. negative cases ----------------------------------------------------------------
if node "$schema/validate.mjs" --negative "$rendered" "$job" >"$tmp/negative.out"; then
  cat "$tmp/negative.out"
  pass "every negative case was rejected for the expected reason ($(grep -c '^PASS' "$tmp/negative.out") cases)"
else
  cat "$tmp/negative.out" >&2
  fail "a negative case was not rejected as expected (see above)"
fi

# --- 4. Containerfile --------------------------------------------------------------
cf="$root/deploy/Containerfile"
missing=()
while read -r src; do
  [[ -e "$root/$src" ]] || missing+=("$src")
done < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$cf")
((${#missing[@]} == 0)) || fail "deploy/Containerfile copies paths that do not exist: ${missing[*]}"
for lib in libbpf1 liburing2 libssl3 libabsl20220623 libnghttp2-14 libcurl4 libspdlog1.10 libyaml-cpp0.7 libfmt9; do
  grep -qw "$lib" "$cf" || fail "deploy/Containerfile runtime stage does not install $lib"
done
grep -q 'scripts/deps' "$cf" && grep -q 'scripts/build' "$cf" || fail "deploy/Containerfile must build with scripts/deps and scripts/build"
pass "deploy/Containerfile: COPY sources exist, runtime libraries listed"

echo "PASS deploy_validate"
