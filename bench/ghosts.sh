#!/usr/bin/env bash
# Benchmark `wonk ghosts` against the floor: reading every mount namespace's mountinfo once.
#
#   sudo bench/ghosts.sh
#
# Environment: NS (namespaces, default 300), MOUNTS (file bind mounts per namespace, default 20),
# REPS (repetitions, default 5), GHOSTS (namespaces given one ghost mount, default 3),
# WONK (binary to test; default: the shipped, static one, built by scripts/release),
# PROFILE (a command prefix such as "strace -c -f" or "perf stat"; runs one more wonk under it at the end).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=${NS:-300}
MOUNTS=${MOUNTS:-20}
REPS=${REPS:-5}
GHOSTS=${GHOSTS:-3}

need_root "it creates mount namespaces"
(( NS >= 1 && MOUNTS >= 1 && REPS >= 1 && GHOSTS <= NS )) || die "need NS, MOUNTS, REPS >= 1 and GHOSTS <= NS"

need_wonk
bench_start wonk-bench   # its cleanup: kills the namespaces' pids, then removes $dir unless the host mounts it

# --- Set up: the files once, then NS namespaces that bind-mount them. ---
mkdir "$dir/src" "$dir/dst" "$dir/ghost"
for ((i = 1; i <= MOUNTS; i++)); do
    echo "source $i" >"$dir/src/$i"
    : >"$dir/dst/$i"
done
# Ghost namespaces mount a file of their own on dst/1, so that replacing it affects that namespace only.
for ((k = 1; k <= GHOSTS; k++)); do
    echo "ghost source $k" >"$dir/ghost/$k"
done

mkfifo "$dir/ready"
exec 3<>"$dir/ready"   # read-write, so neither side blocks on open

echo "starting $NS mount namespaces with $MOUNTS file bind mounts each..." >&2
for ((k = 1; k <= NS; k++)); do
    first=$dir/src/1
    (( k <= GHOSTS )) && first=$dir/ghost/$k
    # shellcheck disable=SC2016  # expanded by the inner sh
    unshare -m --propagation private sh -ec '
        d=$1 first=$2 n=$3 k=$4
        mount --bind "$first" "$d/dst/1"
        i=2
        while [ "$i" -le "$n" ]; do mount --bind "$d/src/$i" "$d/dst/$i"; i=$((i + 1)); done
        echo "ready $k"
        exec sleep 100000' sh "$dir" "$first" "$MOUNTS" "$k" >&3 &
    pids+=($!)
    if ! read -r -t 10 -u 3 line || [[ $line != "ready $k" ]]; then
        echo "ghosts.sh: namespace $k (pid $!) did not become ready" >&2
        exit 1
    fi
done

# Sanity: each recorded pid is the namespace's sleep, in a mount namespace other than ours.
own_ns=$(readlink /proc/self/ns/mnt)
for p in "${pids[@]}"; do
    [[ $(</proc/$p/comm) == sleep && $(readlink /proc/$p/ns/mnt) != "$own_ns" ]] || {
        echo "ghosts.sh: pid $p is not a sleeping process in its own mount namespace" >&2
        exit 1
    }
done
if mounted_under "$dir"; then
    echo "ghosts.sh: a bind mount leaked into the host namespace" >&2
    exit 1
fi

# Make the ghosts: replace each ghost namespace's source file after it was mounted.
for ((k = 1; k <= GHOSTS; k++)); do
    echo "new ghost source $k" >"$dir/ghost/$k.new"
    mv -f "$dir/ghost/$k.new" "$dir/ghost/$k"
done

mountinfos=()
for p in "${pids[@]}"; do mountinfos+=("/proc/$p/mountinfo"); done

# --- The measured commands. ---
run_wonk() {
    local rc=0
    "$WONK" ghosts --json >/dev/null 2>>"$dir/wonk.stderr" || rc=$?
    (( rc <= 1 )) || { echo "ghosts.sh: wonk exited $rc" >&2; return 1; }
}
floor_cat_each() {
    local f
    for f in "${mountinfos[@]}"; do cat "$f" >/dev/null; done
}
floor_cat_once() {
    cat "${mountinfos[@]}" >/dev/null
}

# One run of wonk whose report we keep, so the findings can be counted. It doubles as a warm-up.
rc=0
"$WONK" ghosts --json >"$dir/report.json" 2>"$dir/wonk.stderr" || rc=$?
(( rc <= 1 )) || { echo "ghosts.sh: wonk exited $rc:" >&2; cat "$dir/wonk.stderr" >&2; exit 1; }
floor_cat_each
floor_cat_once

echo "measuring ($REPS repetitions each)..." >&2
measure wonk run_wonk
measure floor-cat-each floor_cat_each
measure floor-cat-once floor_cat_once

# --- Report. ---
findings=$(jq '.findings | length' "$dir/report.json")
ours=$(jq --arg d "$dir/" '[.findings[] | select(.subject | startswith($d))] | length' "$dir/report.json")
blind=$(jq '.blind_spots | length' "$dir/report.json")
stats=$(jq -r '[.checks[] | select(.name == "ghosts") | .stats | to_entries[] | "\(.key)=\(.value)"] | join(" ")' \
    "$dir/report.json" 2>/dev/null || echo "?")

echo
echo "wonk ghosts: $NS namespaces x $MOUNTS file bind mounts, $GHOSTS ghosts made ($(nproc) cores, kernel $(uname -r))"
echo "wonk reported $findings finding(s), $ours of them in this benchmark's namespaces (expected $GHOSTS)"
echo "wonk stats: $stats"
echo "wonk reported $blind blind spot(s)"
jq -r '.blind_spots[] | "  \(.what): \(.why)"' "$dir/report.json"
report_wonk_stderr
echo
awk '
    { name[NR] = $1; wall[NR] = $2; cpu[NR] = $3 }
    END {
        printf "%-16s %14s %14s %12s %12s\n", "command", "median wall ms", "median CPU ms", "wall ratio", "CPU ratio"
        for (i = 1; i <= NR; i++)
            printf "%-16s %14.1f %14.1f %12s %12s\n", name[i], wall[i], cpu[i],
                (i == 1 ? "" : sprintf("%.2fx", wall[1] / wall[i])),
                (i == 1 ? "" : sprintf("%.2fx", cpu[i] > 0 ? cpu[1] / cpu[i] : 0))
        print ""
        print "ratios are wonk / floor. Target: wonk within 2x of the floor (floor-cat-once is the tight one)."
        tight = wall[1] / wall[3]
        printf "wonk vs tight floor: %.2fx wall -> %s\n", tight, (tight <= 2 ? "within target" : "OVER the 2x target")
    }' "$dir/results"

if [[ -n ${PROFILE:-} ]]; then
    echo
    echo "one wonk run under: $PROFILE"
    # shellcheck disable=SC2086  # PROFILE is a command line
    $PROFILE "$WONK" ghosts --json >/dev/null || (( $? <= 1 ))
fi
