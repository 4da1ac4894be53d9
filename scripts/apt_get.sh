#!/usr/bin/env bash
# apt_get ARGS...: apt-get that waits for another apt/dpkg process to release its lock (cloud
# machines often run one at boot) instead of failing, and on any other failure prints apt's
# own output and returns non-zero. Sourced by setup.sh and slurm_local.sh.
#   APT_LOCK_WAIT      seconds to wait for the lock in all (default 600)
#   APT_LOCK_RETRY     seconds between tries (default 5)
# DPkg::Lock::Timeout covers dpkg's locks (install); the package lists' lock (update) has no
# such option, so a busy lock is retried here.
apt_get() {
  local waited=0 output sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  until output=$(DEBIAN_FRONTEND=noninteractive $sudo apt-get \
                   -o DPkg::Lock::Timeout="${APT_LOCK_WAIT:-600}" "$@" 2>&1); do
    if grep -qiE "could not get lock|unable to lock|is held by process" <<<"$output" \
        && [ "$waited" -lt "${APT_LOCK_WAIT:-600}" ]; then
      [ "$waited" -eq 0 ] && echo "apt_get: another apt process holds its lock; waiting" >&2
      sleep "${APT_LOCK_RETRY:-5}"
      waited=$((waited + ${APT_LOCK_RETRY:-5} + 1))
      continue
    fi
    echo "$output" >&2
    return 1
  done
}
