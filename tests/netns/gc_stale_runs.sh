#!/usr/bin/env bash
# gc_stale_runs.sh [--delete]: finds runs of the namespace harness whose
# test shell is gone (a test killed together with its watchdog, e.g. by
# SIGKILL to its whole process group, or a crash) and lists them; with
# --delete it tears each one down with the harness's own teardown
# (rm_gc_stale_runs in lib.sh; every test's rm_init does the same). A run
# whose owner is alive, or whose owner cannot be established, is never
# touched. Run it by hand, as root.
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

rm_gc_stale_runs "$delete"
