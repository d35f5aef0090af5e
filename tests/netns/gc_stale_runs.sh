#!/usr/bin/env bash
# gc_stale_runs.sh [--delete]: finds runs of the namespace harness whose
# test shell is gone (a test killed together with its watchdog, e.g. by
# SIGKILL to its whole process group, or a crash) and lists them; with
# --delete it tears each one down with the harness's own teardown. A run
# whose owner is alive, or whose owner cannot be established, is never
# touched. Not a test: run it by hand, as root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

delete=0
if [[ ${1:-} == --delete ]]; then
  delete=1
elif [[ -n ${1:-} ]]; then
  echo "usage: $0 [--delete]" >&2
  exit 2
fi
[[ $(id -u) -eq 0 ]] || { echo "gc_stale_runs.sh: needs root" >&2; exit 1; }
if [[ $(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]; then
  RM_CG2=/sys/fs/cgroup/unified
else
  RM_CG2=/sys/fs/cgroup
fi

# Every run id that still has something on the machine.
ids=$({
  ip netns list | awk '{print $1}' | sed -n 's/^rmt\([a-z0-9]\{1,20\}\)-.*/\1/p'
  find "$RM_CG2" -maxdepth 1 -name 'ringmesh-test-*' -printf '%f\n' | sed 's/^ringmesh-test-//'
  find "$RM_BPFFS" -maxdepth 1 -name 'ringmesh-test-*' -printf '%f\n' 2>/dev/null | sed 's/^ringmesh-test-//'
} | grep -E '^[a-z0-9]{1,20}$' | sort -u || true)

stale=0
for id in $ids; do
  tmp=$(compgen -G "${TMPDIR:-/tmp}/ringmesh-test-$id.*" | head -n 1 || true)
  owner=""
  if [[ -n $tmp && -s $tmp/owner ]]; then
    read -r pid start <"$tmp/owner"
    if [[ $(_rm_starttime "$pid") == "$start" && $(_rm_proc_state "$pid") != Z ]]; then
      echo "run $id: owner pid $pid alive, left alone"
      continue
    fi
    owner="owner pid $pid gone"
  else
    echo "run $id: owner unknown (no ${TMPDIR:-/tmp}/ringmesh-test-$id.*/owner), left alone"
    continue
  fi
  stale=$((stale + 1))
  echo "run $id: stale ($owner)"
  if ((delete)); then
    (
      RM_TEST="gc-$id" RM_ID=$id RM_NS_PREFIX="rmt$id-" RM_TMP=$tmp
      RM_CG="$RM_CG2/ringmesh-test-$id" RM_PINROOT="$RM_BPFFS/ringmesh-test-$id"
      _RM_TORN_DOWN=0
      rm_teardown
    ) || echo "run $id: teardown reported leftovers"
  fi
done
echo "$stale stale run(s)$( ((delete)) || echo '; rerun with --delete to remove them')"
