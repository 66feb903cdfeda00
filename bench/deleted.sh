#!/usr/bin/env bash
# Benchmark `wonk deleted` against `lsof +L1` and `find /proc/*/fd -lname '*(deleted)'`, on a node given PROCS
# helper processes holding FDS open descriptors each, DELETED of them (per process) on files unlinked since.
#
#   sudo bench/deleted.sh
#
# Environment: PROCS (default 500), FDS (descriptors per process, default 100), DELETED (deleted files per
# process, default 2), REPS (repetitions, default 5), WONK (binary to test; default: the shipped, static one,
# built by scripts/release, with the `bpf` feature). Needs perl (the helpers), jq, and lsof, which this script
# does not install (Debian: `apt-get install lsof`).
#
# wonk runs twice: `--source bpf` (the kernel's file and mapping iterators hand over only the deleted files) as
# `wonk`, the figure against the target, and `--source proc` (every /proc/PID/fd link and /proc/PID/maps) as
# `wonk-proc`; both must find the same descriptors as lsof and find.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROCS=${PROCS:-500}
FDS=${FDS:-100}
DELETED=${DELETED:-2}
REPS=${REPS:-5}
need_whole_numbers PROCS FDS DELETED REPS
need_root "it reads every process's descriptors"
need_tools perl jq lsof find
(( PROCS >= 1 && REPS >= 1 && DELETED <= FDS )) || die "need PROCS, REPS >= 1 and DELETED <= FDS"
(( FDS + 16 <= $(ulimit -n) )) || die "FDS=$FDS is above this shell's open-file limit ($(ulimit -n))"

need_wonk
bench_start wonk-bench-deleted   # its cleanup: kills the helpers by the pids recorded, then removes $dir

mkdir "$dir/pool" "$dir/del"
for ((i = 0; i < 100; i++)); do echo "pool $i" >"$dir/pool/$i"; done

mkfifo "$dir/ready"
exec 3<>"$dir/ready"   # read-write, so neither side blocks on open

# Each helper: DELETED files written (4 KiB), kept open and unlinked; the rest of its FDS descriptors on the
# shared pool (still linked); then it says ready and sleeps. Its stdout is fd 3 only until it is ready.
helper='
    my ($d, $k, $n, $del) = @ARGV;
    my @h;
    for my $i (1 .. $del) {
        my $f = "$d/del/$k.$i";
        open(my $fh, ">", $f) or die "$f: $!";
        print $fh "x" x 4096;
        $fh->flush;
        unlink $f or die "$f: $!";
        push @h, $fh;
    }
    for my $i (1 .. $n - $del) {
        open(my $fh, "<", "$d/pool/" . ($i % 100)) or die "$!";
        push @h, $fh;
    }
    $| = 1;
    print "ready $k\n";
    close STDOUT;
    sleep 100000;'
echo "starting $PROCS helper processes with $FDS descriptors each ($DELETED deleted)..." >&2
t0=${EPOCHREALTIME//[.,]/}
for ((k = 1; k <= PROCS; k++)); do
    perl -e "$helper" "$dir" "$k" "$FDS" "$DELETED" >&3 </dev/null &
    pids+=($!)
    if ! read -r -t 10 -u 3 line || [[ $line != "ready $k" ]]; then
        die "helper $k (pid $!) did not become ready"
    fi
done
echo "started in $(secs_since "$t0") s" >&2
exec 3>&-

# What each tool finds, as "PID FD" lines of our helpers only (sorted), so that the sets can be compared.
printf '%s\n' "${pids[@]}" | sort >"$dir/ours"
# join wants both sides sorted the same way on the pid, as text.
by_pid() { sort -k1,1 | join -j1 - "$dir/ours" | sort -u; }

for src in bpf proc; do
    rc=0
    "$WONK" deleted --source "$src" --top 1000000 --json >"$dir/report.$src.json" 2>"$dir/wonk.stderr" || rc=$?
    (( rc <= 1 )) || { cat "$dir/wonk.stderr" >&2; die "wonk --source $src exited $rc"; }
    jq -r '.checks[0].details.largest[] | .held_by[] | select(.via == "fd") | "\(.pid) \(.fd)"' \
        "$dir/report.$src.json" | by_pid >"$dir/found.wonk-$src"
done
cp "$dir/found.wonk-bpf" "$dir/found.wonk"
cp "$dir/report.bpf.json" "$dir/report.json"
{ lsof +L1 2>/dev/null || true; } | awk 'NR > 1 && $4 ~ /^[0-9]+[rwu]/ { fd = $4; sub(/[^0-9].*/, "", fd); print $2, fd }' \
    | by_pid >"$dir/found.lsof"
# shellcheck disable=SC2016
{ sh -c 'find /proc/[0-9]*/fd -lname "*(deleted)" 2>/dev/null' || true; } | awk -F/ '{ print $3, $5 }' | by_pid \
    >"$dir/found.find"
want=$((PROCS * DELETED))
for t in wonk-bpf wonk-proc lsof find; do
    n=$(wc -l <"$dir/found.$t")
    (( n == want )) || bad "$t found $n of our $want deleted descriptors"
done
cmp -s "$dir/found.wonk" "$dir/found.lsof" || bad "wonk and lsof +L1 found different (pid, fd) sets"
cmp -s "$dir/found.wonk" "$dir/found.wonk-proc" || bad "wonk --source bpf and --source proc found different sets"
cmp -s "$dir/found.wonk" "$dir/found.find" || bad "wonk and find found different (pid, fd) sets"

run_wonk() {
    local rc=0
    "$WONK" deleted --source "${1:-bpf}" --json >/dev/null 2>>"$dir/wonk.stderr" || rc=$?
    (( rc <= 1 )) || { echo "deleted.sh: wonk exited $rc" >&2; return 1; }
}
run_wonk_proc() { run_wonk proc; }
run_lsof() { lsof +L1 >/dev/null 2>&1 || true; }
run_find() { sh -c 'find /proc/[0-9]*/fd -lname "*(deleted)" >/dev/null 2>&1' || true; }

echo "measuring ($REPS rounds, each command once a round)..." >&2
measure_rounds wonk run_wonk lsof-L1 run_lsof wonk-proc run_wonk_proc find-lname run_find

fds_total=$(jq '.checks[0].details.fds_read' "$dir/report.json")
procs_total=$(jq '.checks[0].details.processes' "$dir/report.json")
echo
echo "wonk deleted: $PROCS helpers x $FDS descriptors ($DELETED deleted each) ($(nproc) cores, kernel $(uname -r))"
echo "wonk read $fds_total descriptors of $procs_total processes; our deleted descriptors found:" \
    "wonk $(wc -l <"$dir/found.wonk") (proc: $(wc -l <"$dir/found.wonk-proc")), lsof $(wc -l <"$dir/found.lsof")," \
    "find $(wc -l <"$dir/found.find") (expected $want)"
jq -r '.blind_spots[] | "  blind spot: \(.what): \(.why)"' "$dir/report.json"
report_wonk_stderr
echo
awk '
    { name[NR] = $1; wall[NR] = $2; cpu[NR] = $3 }
    END {
        printf "%-12s %14s %14s %16s %16s\n", "command", "median wall ms", "median CPU ms", "it / wonk wall", "it / wonk CPU"
        for (i = 1; i <= NR; i++)
            printf "%-12s %14.1f %14.1f %16s %16s\n", name[i], wall[i], cpu[i],
                (i == 1 ? "" : sprintf("%.1fx", wall[i] / wall[1])),
                (i == 1 ? "" : sprintf("%.1fx", cpu[1] > 0 ? cpu[i] / cpu[1] : 0))
        print ""
        r = wall[2] / wall[1]
        printf "lsof +L1 / wonk: %.1fx wall -> %s\n", r, (r >= 10 ? "within target (10x)" : "UNDER the 10x target")
    }' "$dir/results"
exit_if_wrong
