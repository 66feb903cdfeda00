#!/usr/bin/env bash
# Benchmark `wonk layers` against du and find on a pod emptyDir of a million files.
#
#   sudo bench/layers.sh
#
# Makes an ext4 image (sparse, loop-mounted noatime under a mktemp directory, -N sized for the tree), puts a
# kubelet root on it, and builds one pod's emptyDir, $K/pods/UID/volumes/kubernetes.io~empty-dir/data, holding
# DIRS directories of FILES files each (every BYTES_EVERY-th file has FILE_BYTES bytes, the others are empty).
# Then it times, REPS times cold (`sync; echo 3 > /proc/sys/vm/drop_caches` before every run, the contenders
# alternating) and REPS times warm (after one untimed warm-up run of each), and reports medians of wall and CPU
# (user + sys, children included) time:
#
#   wonk        wonk layers --kubelet-root $K --json      must report exactly DIRS x FILES files, DIRS dirs, no other,
#                                                         DIRS x FILES + DIRS inodes, and bytes within 5 of its own
#                                                         standard errors of the bytes written, marked `sampled`
#                                                         (exact, and marked so, when FILES <= 32)
#   wonk-exact  wonk layers ... --exact-bytes             the same counts, and exactly the bytes written
#   du-inodes   du -s --inodes DIR                        must count DIRS x FILES + DIRS + 1 inodes
#   find        find DIR | wc -l                          must count DIRS x FILES + DIRS + 1 names
#   du          du -s DIR                                 stats every file, as wonk-exact does (the equal-work
#                                                         comparison)
#
# Every run's answer is checked, untimed, so a fast wrong answer cannot pass. Target: wonk faster (wall) than
# both `du -s --inodes` and `find | wc -l`, cold and warm.
#
# Environment:
#   DIRS, FILES     the tree: DIRS directories of FILES files                         default 1000, 1000
#   FILE_BYTES      size of the non-empty files                                       default 100
#   BYTES_EVERY     every BYTES_EVERY-th file of a directory is non-empty (0: none)    default 10
#   REPS            timed runs of each command, cold and warm                          default 5
#   IMG_SIZE        size of the sparse image (truncate syntax)                         default 3G
#   LOOP_DIO        1: the loop device does direct I/O on its image, as a disk would; 0: buffered   default 1
#   WONK            wonk binary; default: the shipped, static one (scripts/release); copied, so that a
#                   rebuild during the run changes nothing
#   PROFILE         a command prefix; at the end wonk runs once more under it, warm:
#                   "strace -c -f", "perf record -g -o /tmp/wonk-layers.data", "perf stat"
#   PROFILE_COLD=1  drop caches before the profiled run
#
# Cleanup (EXIT, INT, TERM; bench/lib.sh): kills the pids it recorded (the tree builder), unmounts the mount
# point it recorded, detaches the loop device it recorded (and any still attached to its own image file), then
# removes its temporary directory; nothing else is touched. A signal that arrives during a timed run is handled
# when that run ends (bash runs traps between foreground commands).
set -euo pipefail
export LC_ALL=C
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_decimals=0   # whole milliseconds

DIRS=${DIRS:-1000}
FILES=${FILES:-1000}
FILE_BYTES=${FILE_BYTES:-100}
BYTES_EVERY=${BYTES_EVERY:-10}
REPS=${REPS:-5}
IMG_SIZE=${IMG_SIZE:-3G}
PROFILE=${PROFILE:-}
PROFILE_COLD=${PROFILE_COLD:-0}

need_whole_numbers DIRS FILES FILE_BYTES BYTES_EVERY REPS
(( DIRS >= 1 && FILES >= 1 && REPS >= 1 )) || die "need DIRS, FILES, REPS >= 1"
(( FILE_BYTES <= 65536 )) || die "FILE_BYTES is at most 65536"
need_root "loop device, mount, drop_caches"
need_tools mkfs.ext4 losetup mount umount mountpoint jq find du wc truncate
command -v gcc >/dev/null || command -v python3 >/dev/null || die "needs gcc or python3 (to build the tree fast)"

need_wonk
bench_start wonk-layers-bench

# A private copy of the binary: other people rebuilding target/ during the run change nothing.
copy_wonk

# bg PROGRAM ARGS...: runs a program (not a function: its pid must be the program's) in the background, recorded
# for cleanup, and waits for it, so that a signal is handled at once.
bg() {
    local p rc=0
    "$@" &
    p=$!
    pids+=("$p")
    wait "$p" || rc=$?
    local -a left=()
    local q
    for q in "${pids[@]}"; do [[ $q == "$p" ]] || left+=("$q"); done
    pids=(${left[@]+"${left[@]}"})
    return "$rc"
}

# --- The tree builder, a program: "${mktree[@]}" TOP DIRS FILES EVERY BYTES. ---
if command -v gcc >/dev/null; then
    cat >"$dir/mktree.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static int digits(long n) { int d = 1; while (n >= 10) { n /= 10; d++; } return d; }
int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: mktree TOP DIRS FILES EVERY BYTES\n"); return 2; }
    long dirs = atol(argv[2]), files = atol(argv[3]), every = atol(argv[4]), bytes = atol(argv[5]);
    int wd = digits(dirs - 1), wf = digits(files - 1);
    char buf[65536], name[64];
    memset(buf, 'x', sizeof buf);
    int top = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0) { perror(argv[1]); return 1; }
    for (long i = 0; i < dirs; i++) {
        snprintf(name, sizeof name, "d%0*ld", wd, i);
        if (mkdirat(top, name, 0755) != 0) { perror(name); return 1; }
        int d = openat(top, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d < 0) { perror(name); return 1; }
        for (long j = 0; j < files; j++) {
            snprintf(name, sizeof name, "f%0*ld", wf, j);
            int fd = openat(d, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) { perror(name); return 1; }
            if (every > 0 && bytes > 0 && j % every == 0 && write(fd, buf, bytes) != bytes) { perror("write"); return 1; }
            close(fd);
        }
        close(d);
    }
    return 0;
}
EOF
    gcc -O2 -o "$dir/mktree" "$dir/mktree.c"
    mktree=("$dir/mktree")
else
    cat >"$dir/mktree.py" <<'EOF'
import os, sys
top, dirs, files, every, nbytes = sys.argv[1], *map(int, sys.argv[2:])
wd, wf = len(str(dirs - 1)), len(str(files - 1))
data = b"x" * nbytes
for i in range(dirs):
    d = os.path.join(top, f"d{i:0{wd}d}")
    os.mkdir(d)
    for j in range(files):
        fd = os.open(os.path.join(d, f"f{j:0{wf}d}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        if every and nbytes and j % every == 0:
            os.write(fd, data)
        os.close(fd)
EOF
    mktree=(python3 "$dir/mktree.py")
fi

# --- The filesystem and the pod's emptyDir. ---
nfiles=$((DIRS * FILES))
nonempty=0
if (( BYTES_EVERY > 0 && FILE_BYTES > 0 )); then
    nonempty=$((DIRS * ((FILES + BYTES_EVERY - 1) / BYTES_EVERY)))
fi
want_bytes=$((nonempty * FILE_BYTES))
want_names=$((nfiles + DIRS + 1))   # files, directories and DIR itself, as find and du --inodes count them
uid=6c6179e2-5273-4b65-9e63-68000000cafe

echo "making the emptyDir: $DIRS directories x $FILES files on a loop-mounted ext4..." >&2
t0=${EPOCHREALTIME//[.,]/}
make_fs mnt -N $((want_names + 65536))
loop=$fs_dev mnt=$fs_mnt
K=$mnt/kubelet
D=$K/pods/$uid/volumes/kubernetes.io~empty-dir/data
mkdir -p "$D"
bg "${mktree[@]}" "$D" "$DIRS" "$FILES" "$BYTES_EVERY" "$FILE_BYTES"
sync
iused=$(df --output=iused "$mnt" | tail -1 | tr -d ' ')
echo "  $D: $nfiles files ($nonempty of $FILE_BYTES bytes), $DIRS dirs; $iused inodes in use on $loop;" \
    "built in $(secs_since "$t0") s" >&2

# The contenders: cmd_KEY runs it, check_KEY checks its answer (untimed).
keys=(wonk wonk-exact du-inodes find du)
wonk_walked=() wonk_estimates=()
wonk_run() { # OUT ARGS...
    local out=$1 rc=0
    shift
    "$WONK" layers --kubelet-root "$K" --json "$@" >"$out" 2>>"$dir/wonk.stderr" || rc=$?
    (( rc <= 2 )) || { echo "layers.sh: wonk layers exited $rc:" >&2; cat "$dir/wonk.stderr" >&2; exit 1; }
}
# wonk_check JSON: the counts every wonk run must get exactly; sets ev to the pod's evidence as
# "bytes bytes_method bytes_stderr statted estimated".
ev=
wonk_check() {
    local got want="$nfiles $DIRS 0 $((nfiles + DIRS)) complete false"
    got=$(jq -r --arg uid "$uid" '[.findings[] | select(.subject == $uid) | .evidence
        | "\(.files) \(.dirs) \(.other) \(.inodes) \(.inode_dedup) \(.lower_bound)"] | join(",")' "$1")
    [[ $got == "$want" ]] ||
        bad "wonk layers said files dirs other inodes inode_dedup lower_bound = '$got', expected '$want'"
    # Other pods' layers on this node (containers of other tests, say) are walked too, and timed with ours.
    wonk_walked+=("$(jq -r --arg uid "$uid" '"\(.checks[0].stats.layers_walked) layer(s), \([.findings[]
        | select(.subject != $uid) | .evidence.files] | add // 0) other files"' "$1")")
    ev=$(jq -r --arg uid "$uid" '.findings[] | select(.subject == $uid) | .evidence
        | "\(.bytes) \(.bytes_method) \(.bytes_stderr) \(.bytes_statted_files) \(.bytes_estimated_files)"' "$1")
}
cmd_wonk() { wonk_run "$dir/wonk.json"; }
check_wonk() {
    local bytes method stderr statted estimated
    wonk_check "$dir/wonk.json"
    read -r bytes method stderr statted estimated <<<"$ev"
    (( statted + estimated == nfiles )) || bad "wonk: $statted statted + $estimated estimated files, not $nfiles"
    if (( FILES <= 32 )); then
        [[ "$bytes $method" == "$want_bytes exact" ]] || bad "wonk said bytes '$bytes $method', expected '$want_bytes exact'"
    elif [[ $method != sampled ]] || (( ${bytes:-0} - want_bytes > 5 * stderr || want_bytes - ${bytes:-0} > 5 * stderr )); then
        bad "wonk said bytes $bytes ($method, standard error $stderr), expected $want_bytes within 5 standard errors, sampled"
    fi
    wonk_estimates+=("$bytes (standard error $stderr, $statted files statted)")
}
cmd_wonk-exact() { wonk_run "$dir/wonk-exact.json" --exact-bytes; }
check_wonk-exact() {
    local bytes method stderr statted estimated
    wonk_check "$dir/wonk-exact.json"
    read -r bytes method stderr statted estimated <<<"$ev"
    [[ "$bytes $method $statted $estimated" == "$want_bytes exact $nfiles 0" ]] ||
        bad "wonk --exact-bytes said bytes method statted estimated = '$bytes $method $statted $estimated'," \
            "expected '$want_bytes exact $nfiles 0'"
}
cmd_du-inodes() { du -s --inodes "$D" >"$dir/du-inodes.out"; }
check_du-inodes() {
    local n
    n=$(awk '{ print $1 }' "$dir/du-inodes.out")
    (( n == want_names )) || bad "du -s --inodes said $n, expected $want_names"
}
cmd_find() { find "$D" | wc -l >"$dir/find.out"; }
check_find() {
    local n
    n=$(<"$dir/find.out")
    (( n == want_names )) || bad "find | wc -l said $n, expected $want_names"
}
cmd_du() { du -s "$D" >"$dir/du.out"; }
check_du() {
    local kib
    kib=$(awk '{ print $1 }' "$dir/du.out")
    (( kib >= nonempty * 4 )) || bad "du -s said $kib KiB, expected at least $((nonempty * 4))"
}

declare -A runs_wall runs_cpu
run_one() { # KEY MODE
    timed_rusage "cmd_$1"
    "check_$1"
    runs_wall[$1.$2]+="$last_wall "
    runs_cpu[$1.$2]+="$last_cpu "
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "timing ${keys[*]}: $REPS cold runs each (caches dropped before every run), then $REPS warm..." >&2
for ((r = 1; r <= REPS; r++)); do
    for k in "${keys[@]}"; do
        drop_caches
        run_one "$k" cold
    done
    echo "  cold $r/$REPS" >&2
done
for k in "${keys[@]}"; do "cmd_$k"; "check_$k"; done
for ((r = 1; r <= REPS; r++)); do
    for k in "${keys[@]}"; do run_one "$k" warm; done
    echo "  warm $r/$REPS" >&2
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -n $PROFILE ]]; then
    (( PROFILE_COLD )) && drop_caches
    echo "profiling one more wonk run: $PROFILE $WONK layers --kubelet-root $K --json" >&2
    # shellcheck disable=SC2086  # PROFILE is a command prefix with arguments
    $PROFILE "$WONK" layers --kubelet-root "$K" --json >"$dir/wonk-profiled.json" || true
fi

# --- Report. ---
med() { # KEY MODE wall|cpu
    local -n a=runs_$3
    # shellcheck disable=SC2086  # a list of numbers
    median ${a[$1.$2]}
}
walked=$(printf '%s\n' "${wonk_walked[@]}" | sort | uniq -c | awk '{ n = $1; $1 = ""; printf "%s%s in %d run(s)", (NR > 1 ? "; " : ""), substr($0, 2), n }')
echo
echo "wonk layers against du and find: $(nproc) cores, kernel $(uname -r), REPS=$REPS, load average $load_start" \
    "at the start and $load_end at the end; loop devices with LOOP_DIO=$LOOP_DIO"
echo "emptyDir: $DIRS dirs x $FILES files ($nonempty of $FILE_BYTES bytes) on ext4 ($loop, noatime);" \
    "wonk walked: $walked"
echo
printf '%-10s %-42s %9s %9s %9s %9s\n' key "command (medians of $REPS runs)" "cold ms" "cold CPU" "warm ms" "warm CPU"
for k in "${keys[@]}"; do
    case $k in
        wonk) c="wonk layers --kubelet-root \$K --json" ;;
        wonk-exact) c="wonk layers ... --exact-bytes" ;;
        du-inodes) c="du -s --inodes DIR" ;;
        find) c="find DIR | wc -l" ;;
        du) c="du -s DIR" ;;
    esac
    printf '%-10s %-42s %9s %9s %9s %9s\n' "$k" "$c" "$(med "$k" cold wall)" "$(med "$k" cold cpu)" \
        "$(med "$k" warm wall)" "$(med "$k" warm cpu)"
done
echo
echo "every run, wall ms:"
for k in "${keys[@]}"; do
    printf '  %-10s cold: %s  warm: %s\n' "$k" "${runs_wall[$k.cold]}" "${runs_wall[$k.warm]}"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
missed=0
for k in du-inodes find; do
    for m in cold warm; do
        o=$(med "$k" "$m" wall) w=$(med wonk "$m" wall)
        v=MET
        (( w < o )) || { v=MISSED; missed=1; }
        printf '%-10s %s: %s / wonk = %sx  %s\n' "$k" "$m" "$k" "$(ratio "$o" "$w")" "$v"
    done
done
for k in du du-inodes; do
    for m in cold warm; do
        printf '%-10s %s: %s / wonk-exact = %sx  (comparison: both stat every file)\n' "$k" "$m" "$k" \
            "$(ratio "$(med "$k" "$m" wall)" "$(med wonk-exact "$m" wall)")"
    done
done
echo "target: wonk faster than both du -s --inodes and find | wc -l, cold and warm: $( ((missed)) && echo MISSED || echo MET)"
echo "wonk's bytes (the emptyDir had $want_bytes): $(printf '%s\n' "${wonk_estimates[@]}" | sort | uniq -c |
    awk '{ n = $1; $1 = ""; printf "%s%s in %d run(s)", (NR > 1 ? "; " : ""), substr($0, 2), n }')"
exit_if_wrong
echo "every run's count was right: $nfiles files, $DIRS dirs, $((nfiles + DIRS)) inodes (wonk);" \
    "$want_bytes bytes (wonk --exact-bytes; wonk's estimate within 5 standard errors); $want_names names (du --inodes, find)"
