#!/usr/bin/env bash
# make demo: the lab, some real queries, status and stats; then left running.
set -euo pipefail
cd "$(dirname "$0")/.."
N=.venv/bin/nexusctl
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (network namespaces, BPF)" >&2; exit 3; }

echo "== nexusctl lab up"
$N lab up
echo
echo "== queries from nexus-cli (each name twice: the second may be answered in the kernel)"
for name in h1 h2 h7 www multi; do
  for _ in 1 2; do
    printf '%-16s ' "$name.lab.test"
    ip netns exec nexus-cli dig @198.18.0.1 "$name.lab.test" A +short +time=2 +tries=1 | tr '\n' ' '
    echo
  done
done
printf '%-16s ' "h7.lab.test AAAA"
ip netns exec nexus-cli dig @2001:db8:18::1 h7.lab.test AAAA +short +time=2 +tries=1
echo
echo "== nexusctl status"
$N status
echo
echo "== nexusctl stats"
$N stats
echo
echo "The lab is left running. Explore:"
echo "  ip netns exec nexus-cli dig @198.18.0.1 h42.lab.test"
echo "  $N stats --watch      $N maps list      $N maps dump nexus_counters"
echo "End it with: $N lab down"
