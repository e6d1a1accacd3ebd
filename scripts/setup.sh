#!/usr/bin/env bash
# Take a bare Debian 12 machine to one that can build, load and test nexus.
# Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm bpftool libbpf-dev libbpf1 libelf-dev iproute2 unbound dnsutils dnsperf
              make python3-venv openssl util-linux procps)
VENV=${VENV:-.venv}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]} (run make setup as root, or apt-get install them)" >&2
    exit 3
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The unbound package would start a system resolver; the lab runs its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs and tracefs: needed by every kernel-side command and test.
mountpoint -q /sys/fs/bpf 2>/dev/null || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.nexus-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing nexusctl and its test extras into $VENV"
  # compat: a .pth path entry, not an import hook (the hook costs ~15 ms per command)
  if ! "$VENV/bin/pip" install -q -e '.[test,bench]' --config-settings editable_mode=compat 2> "$VENV/pip.log"; then
    grep -v "^WARNING: Location" "$VENV/pip.log" >&2; exit 1
  fi
  touch "$stamp"
fi
echo "setup: ok ($("$VENV/bin/nexusctl" --version 2>/dev/null || echo nexusctl))"
