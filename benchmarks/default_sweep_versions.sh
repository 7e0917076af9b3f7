#!/bin/bash
# The default `sparsedict sweep` (the README's main job) end to end, for two source trees one after
# the other on the same machine: `benchmarks/default_sweep_versions.sh OLD_TREE [NEW_TREE]`
# (NEW_TREE defaults to this checkout; make OLD_TREE with `git worktree add --detach DIR REV`).
# Prints wall time, CPU time and peak RSS of each, and the load average around each run.
set -e
new=${2:-$(cd "$(dirname "$0")/.." && pwd)}
out=$(mktemp -d)
for tree in "$new" "$1"; do
  echo "== $tree ($(git -C "$tree" log -1 --format=%h)) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$tree" && PYTHONPATH="$tree" /usr/bin/time -f "wall %e s, cpu %U+%S s, peak rss %M KB" \
    python -m sparsedict sweep -q --out "$out/$(basename "$tree")") 2>&1 | tail -1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
