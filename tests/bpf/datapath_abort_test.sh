#!/usr/bin/env bash
# bpf_datapath_test killed in the middle of a test (SIGKILL, SIGTERM, SIGPIPE)
# leaves nothing behind: its watchdog child removes the pins (detaching the
# programs) and the cgroups the test made. Fails when anything remains.
set -euo pipefail
bin=${RINGMESH_BUILD_DIR:?}/tests/bpf/bpf_datapath_test
if [[ $EUID -ne 0 ]]; then
  [[ ${RINGMESH_REQUIRE_ROOT_TESTS:-0} == 1 ]] && { echo "FAIL: needs root, RINGMESH_REQUIRE_ROOT_TESTS=1"; exit 1; }
  echo "SKIP: needs root (cgroups, bpffs)"
  exit 77
fi
cgroot=/sys/fs/cgroup/unified
[[ -f $cgroot/cgroup.procs ]] || cgroot=/sys/fs/cgroup

pid=""
cleanup() { [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

left() { ls -d "/sys/fs/bpf/ringmesh-test-dp-$1" "$cgroot/ringmesh-test-dp-$1" 2>/dev/null || true; }

fails=0
for sig in KILL TERM PIPE; do
  # The budget test runs for about half a second with programs attached, a
  # map populated and a forked app; the kill lands in the middle of it.
  RINGMESH_REQUIRE_ROOT_TESTS=1 "$bin" --gtest_filter='*FastPathBudget*' >/dev/null 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    [[ -e /sys/fs/bpf/ringmesh-test-dp-$pid/links ]] && break
    sleep 0.01
  done
  [[ -e /sys/fs/bpf/ringmesh-test-dp-$pid/links ]] || { echo "FAIL($sig): the test never attached"; fails=$((fails + 1)); continue; }
  kill "-$sig" "$pid"
  wait "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    [[ -z $(left "$pid") ]] && break
    sleep 0.01
  done
  if [[ -n $(left "$pid") ]]; then
    echo "FAIL($sig): left behind: $(left "$pid" | tr '\n' ' ')"
    fails=$((fails + 1))
  else
    echo "ok: SIG$sig mid-test, nothing left"
  fi
  pid=""
done
((fails == 0)) || exit 1
echo "PASS datapath_abort_test"
