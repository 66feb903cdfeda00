# shellcheck shell=bash
# Helpers shared by the benchmark scripts in bench/. Sourced, not executed:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It provides:
#   bench_name                  the script's file name, the prefix of its messages ("htree.sh")
#   die MESSAGE                 the message on stderr, then exit 2
#   need_whole_numbers VAR...   die unless each named variable holds a whole number
#   need_root WHY               die unless run as root
#   need_tools TOOL...          die unless each is on PATH
#   need_wonk                   WONK: the binary given, or else the one wonk ships (scripts/release: release
#                               profile, static), built now; die unless it is executable
#   bench_start PREFIX          install the cleanup below on EXIT (and `exit 130` on INT, `exit 143` on TERM),
#                               then make the temporary directory dir=/tmp/PREFIX.XXXXXX (its real path)
#   make_fs NAME MKFS_ARGS...   an IMG_SIZE sparse image $dir/NAME.img, ext4 with 4 KiB blocks, on a loop device,
#                               mounted noatime on $dir/NAME (so that reads write nothing); sets fs_dev and
#                               fs_mnt; records all three. The loop device does direct I/O on its image
#                               (LOOP_DIO=1, the default), as a disk would: a buffered loop device (LOOP_DIO=0)
#                               caches the image a second time and serves its reads one at a time
#   copy_wonk                   copies WONK into $dir and points WONK there: a rebuild during the run changes
#                               nothing, and a cold start looks up a path as short as /usr/bin/find's
#   drop_caches                 sync, then drop the page cache, dentries and inodes
#   timed CMD ARGS...           runs it once; last_us: its wall time in microseconds (EPOCHREALTIME)
#   spawn_timed CMD ARGS...     runs the executable CMD once, spawned directly (posix_spawn, as `hyperfine -N` does)
#                               with the caller's redirections, so that a shell's fork is not part of the time;
#                               last_us: wall time from spawn to exit in microseconds; returns CMD's exit status.
#                               The timer is built on first use from C (cc) in $dir, else run by python3
#   spawn_series N OUT CMD ARGS...  runs CMD N times in series from one timer process, as `hyperfine -N` does: no
#                               shell or timer starts between two runs; run i's standard output goes to OUT.i
#                               (i = 1..N), the rest is the caller's; series_us: each run's time in microseconds;
#                               returns the highest exit status of the runs
#   timed_rusage CMD ARGS...    runs it once under bash's `time`; last_wall and last_cpu: wall and CPU (user + sys,
#                               waited-for children included) in ms, with bench_decimals digits after the point
#   median NUMBER...            their median, with bench_decimals digits after the point
#   measure NAME FUNCTION       runs FUNCTION REPS times under timed_rusage; appends "NAME median_wall_ms
#                               median_cpu_ms" to $dir/results
#   measure_rounds NAME FUNCTION [NAME FUNCTION ...]
#                               the same for each pair, but REPS rounds that run each FUNCTION once in turn: a
#                               machine whose speed drifts (a shared VM) slows all of them alike, so their ratios hold
#   secs_since MICROSECONDS     seconds (one decimal) since that EPOCHREALTIME, in microseconds
#   bad MESSAGE / exit_if_wrong record a wrong result (wrong=1, $dir/wrong) / at the end, list them and exit 1
#   report_wonk_stderr          what wonk wrote to $dir/wonk.stderr, counted, if anything
#
# Cleanup (EXIT, INT, TERM), of what the script recorded, by its identifiers, and nothing else: SIGKILLs the pids
# in `pids` (and reaps those that are its children); unmounts `mounts` in reverse order; detaches each loop
# device in `loops` while it still holds one of the image files in `imgs` (an unmount may have detached it, and
# it may be someone else's since), then any loop device still attached to one of those image files (a signal
# between `losetup --find --show` and recording its answer); then removes `dir`, unless something it could not
# unmount, or anything in the mount table naming `dir`, is still there (then it says so and exits 1).
# bash runs traps between foreground commands: a signal during a command is handled when that command ends.

bench_name=${0##*/}
bench_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_decimals=1
LOOP_DIO=${LOOP_DIO:-1}
[[ $LOOP_DIO == [01] ]] || { echo "$bench_name: LOOP_DIO=$LOOP_DIO: give 0 or 1" >&2; exit 2; }
dir=
pids=() mounts=() loops=() imgs=()

die() { echo "$bench_name: $*" >&2; exit 2; }

need_whole_numbers() {
    local v
    for v; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v}: give a whole number"; done
}
need_root() { [[ $EUID -eq 0 ]] || die "needs root ($1); run it with sudo"; }
need_tools() {
    local t
    for t; do command -v "$t" >/dev/null || die "needs $t"; done
}

need_wonk() {
    if [[ -z ${WONK:-} ]]; then
        echo "building wonk (scripts/release: release profile, static)..." >&2
        WONK=$("$bench_repo/scripts/release")
    fi
    [[ -x $WONK ]] || die "$WONK is not executable"
}

# mounted_under DIR: anything in our mount table names DIR (as or under a mount point, or as a bind mount's root).
mounted_under() { grep -qF "$1" /proc/self/mountinfo; }

bench_cleanup() {
    local rc=$? i m l img busy=0
    trap - EXIT INT TERM
    if (( ${#pids[@]} )); then
        kill -KILL -- "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true   # those that are not our children: "not a child", ignored
    fi
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        m=${mounts[i]}
        mountpoint -q "$m" || continue
        umount "$m" 2>/dev/null || { sleep 1; umount "$m"; } || {
            echo "$bench_name: ERROR: could not unmount $m" >&2
            busy=1
        }
    done
    for l in "${loops[@]}"; do
        # Only while it still holds one of our images (an unmount may have detached it, and it may be reused since).
        m=$(losetup -n -O BACK-FILE "$l" 2>/dev/null) || continue
        for img in "${imgs[@]}"; do
            [[ $m == "$img" ]] || continue
            losetup -d "$l" || echo "$bench_name: could not detach $l" >&2
            break
        done
    done
    # A signal between `losetup --find --show` and recording its answer: detach by our own image files.
    for img in "${imgs[@]}"; do
        [[ -e $img ]] || continue
        for l in $(losetup -n -O NAME -j "$img" 2>/dev/null); do
            losetup -d "$l" || echo "$bench_name: could not detach $l" >&2
        done
    done
    if [[ -n $dir ]]; then
        if (( busy )) || mounted_under "$dir"; then
            echo "$bench_name: ERROR: something under $dir is still mounted; not removing it" >&2
            rc=1
        else
            rm -rf "$dir"
        fi
    fi
    exit "$rc"
}

bench_start() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    dir=$(realpath "$(mktemp -d "/tmp/$1.XXXXXX")")
}

make_fs() {
    local name=$1 img=$dir/$1.img mnt=$dir/$1
    shift
    truncate -s "$IMG_SIZE" "$img"
    imgs+=("$img")
    mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$@" "$img"
    fs_dev=$(losetup --find --show --direct-io="$( ((LOOP_DIO)) && echo on || echo off)" "$img")
    loops+=("$fs_dev")
    mkdir "$mnt"
    mounts+=("$mnt")
    mount -t ext4 -o noatime "$fs_dev" "$mnt"
    fs_mnt=$mnt
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

copy_wonk() {
    cp "$WONK" "$dir/wonk"
    WONK=$dir/wonk
}

spawn_timer=()
# build_spawn_timer: spawn_timer=(the timer): `US_FILE RUNS OUT CMD [ARG...]` spawns CMD RUNS times, one after the
# other, each timed from its spawn to its exit, one time a line in US_FILE; OUT "-" keeps the caller's standard
# output, else run i writes OUT.i; exits with the highest exit status of the runs.
build_spawn_timer() {
    if command -v cc >/dev/null; then
        cat >"$dir/spawn-time.c" <<'EOF'
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: spawn-time US_FILE RUNS OUT CMD [ARG...]\n"); return 125; }
    long runs = atol(argv[2]);
    FILE *f = fopen(argv[1], "w");
    if (runs < 1 || !f) { fprintf(stderr, "spawn-time: bad RUNS %s or %s\n", argv[2], argv[1]); return 125; }
    int worst = 0;
    for (long i = 1; i <= runs; i++) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        /* The output file is made before the clock starts: creating it is not the command's work. */
        int fd = -1;
        if (strcmp(argv[3], "-") != 0) {
            char out[4096];
            snprintf(out, sizeof out, "%s.%ld", argv[3], i);
            if ((fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) { perror(out); return 125; }
            posix_spawn_file_actions_adddup2(&fa, fd, 1);
        }
        struct timespec a, b;
        pid_t pid;
        int st, e;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if ((e = posix_spawnp(&pid, argv[4], &fa, NULL, argv + 4, environ)) != 0) {
            fprintf(stderr, "spawn-time: %s: %s\n", argv[4], strerror(e));
            return 127;
        }
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR) { perror("spawn-time: waitpid"); return 125; }
        clock_gettime(CLOCK_MONOTONIC, &b);
        posix_spawn_file_actions_destroy(&fa);
        if (fd >= 0) close(fd);
        fprintf(f, "%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000);
        int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (rc > worst) worst = rc;
    }
    if (fclose(f) != 0) { perror(argv[1]); return 125; }
    return worst;
}
EOF
        cc -O2 -o "$dir/spawn-time" "$dir/spawn-time.c" || die "cannot build $dir/spawn-time"
        spawn_timer=("$dir/spawn-time")
    elif command -v python3 >/dev/null; then
        cat >"$dir/spawn-time.py" <<'EOF'
import os, sys, time
us_file, runs, out, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
worst, times = 0, []
for i in range(1, runs + 1):
    fd = -1 if out == "-" else os.open(f"{out}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    actions = [] if fd < 0 else [(os.POSIX_SPAWN_DUP2, fd, 1)]
    t0 = time.perf_counter_ns()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=actions)
    _, st = os.waitpid(pid, 0)
    times.append((time.perf_counter_ns() - t0) // 1000)
    if fd >= 0:
        os.close(fd)
    worst = max(worst, os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
with open(us_file, "w") as f:
    f.write("".join(f"{t}\n" for t in times))
sys.exit(worst)
EOF
        spawn_timer=(python3 "$dir/spawn-time.py")
    else
        die "needs cc or python3 (to time a command without a shell's fork)"
    fi
}
spawn_timed() {
    (( ${#spawn_timer[@]} )) || build_spawn_timer
    local rc=0
    "${spawn_timer[@]}" "$dir/spawn-time.us" 1 - "$@" || rc=$?
    last_us=$(<"$dir/spawn-time.us")
    return "$rc"
}
spawn_series() {
    (( ${#spawn_timer[@]} )) || build_spawn_timer
    local n=$1 out=$2 rc=0
    shift 2
    "${spawn_timer[@]}" "$dir/spawn-time.us" "$n" "$out" "$@" || rc=$?
    mapfile -t series_us <"$dir/spawn-time.us"
    return "$rc"
}

last_us=0
timed() {
    local t0=${EPOCHREALTIME//[.,]/} t1
    "$@"
    t1=${EPOCHREALTIME//[.,]/}
    last_us=$((t1 - t0))
}

# The command's own stderr goes to ours (fd 9 holds it while `time` writes to $dir/time.out).
last_wall=0 last_cpu=0
timed_rusage() {
    local TIMEFORMAT='%3R %3U %3S'
    { time "$@" 2>&9; } 9>&2 2>"$dir/time.out"
    read -r last_wall last_cpu < <(awk -v f="%.${bench_decimals}f" '
        NR == 1 { printf f " " f "\n", $1 * 1000, ($2 + $3) * 1000 }' "$dir/time.out")
}

median() {
    printf '%s\n' "$@" | sort -g | awk -v f="%.${bench_decimals}f" '{ v[NR] = $1 } END {
        printf f, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bash's `time` keyword reports the shell's own and its waited-for children's CPU time (getrusage), in ms.
measure() {
    local name=$1 fn=$2 r walls=() cpus=()
    for ((r = 0; r < REPS; r++)); do
        timed_rusage "$fn"
        walls+=("$last_wall") cpus+=("$last_cpu")
    done
    echo "$name $(median "${walls[@]}") $(median "${cpus[@]}")" >>"$dir/results"
}

measure_rounds() {
    local r i walls=() cpus=()
    local -a names=() fns=()
    while (( $# >= 2 )); do names+=("$1") fns+=("$2"); shift 2; done
    for ((r = 0; r < REPS; r++)); do
        for i in "${!fns[@]}"; do
            timed_rusage "${fns[$i]}"
            walls[i]+=" $last_wall" cpus[i]+=" $last_cpu"
        done
    done
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086 # the lists are numbers separated by spaces
        echo "${names[$i]} $(median ${walls[$i]}) $(median ${cpus[$i]})" >>"$dir/results"
    done
}

secs_since() { awk -v a="$1" -v b="${EPOCHREALTIME//[.,]/}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }

wrong=0
bad() { echo "$bench_name: WRONG RESULT: $*" >&2; echo "$*" >>"$dir/wrong"; wrong=1; }
exit_if_wrong() {
    (( wrong )) || return 0
    echo
    echo "WRONG RESULTS:"
    sort "$dir/wrong" | uniq -c
    exit 1
}

report_wonk_stderr() {
    [[ -s $dir/wonk.stderr ]] || return 0
    echo "wonk wrote to stderr:"
    sort "$dir/wonk.stderr" | uniq -c | head -20
}
