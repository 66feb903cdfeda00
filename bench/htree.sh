#!/usr/bin/env bash
# Benchmark `wonk htree DIR`, `wonk who DEV:INODE` and `wonk htree --scan MOUNT` against find, on ext4 images
# loop-mounted under a mktemp directory:
#
#   1. htree: a flat directory of ENTRIES hard links (20-char names), wonk's entry estimate against
#      `find DIR -maxdepth 1 | wc -l`; target: 100x faster, estimate within 5% of the true count.
#   2. who: a tree of TOP x SUB directories plus a chain of DEPTH more; the deepest directory's inode turned
#      into its path by `wonk who LOOPDEV:INODE` against `find MOUNT -inum INODE`; target: 1000x faster.
#   3. --scan: the same tree with a few big directories added (BIG) and one that stays under MIN_SIZE (MEDIUM):
#      `wonk htree --scan MOUNT --min-size MIN_SIZE` against `find MOUNT -type d -size +NM`; both must find
#      the same directories; target: wonk not slower.
#
# Each command runs REPS times cold (`sync; echo 3 > /proc/sys/vm/drop_caches` before each run, the two
# contenders alternating) and warm, in series as `hyperfine -N` runs it: after an untimed warm-up, at least REPS
# runs and at least WARM_SECONDS of them; medians are reported.
# Each run is timed from its spawn to its exit, spawned directly as `hyperfine -N` does (bench/lib.sh
# spawn_timed), so that no shell's fork is part of a millisecond's measurement; find's pipeline runs under sh -c.
# Every run's result is checked (wonk's entry estimate, its path, the directories found), so a fast wrong
# answer cannot pass.
#
#   sudo bench/htree.sh
#
# Environment:
#   ENTRIES   entries of the flat directory                                        default 1000000
#   TOP, SUB  the tree: TOP directories of SUB subdirectories each                 default 100, 1000
#   DEPTH     nested directories under one of the SUB ones; the deepest is the `who` target   default 10
#   BIG       entries of each big directory added for --scan (space-separated)     default "60000 100000 40000"
#   MEDIUM    entries of a directory that must stay under MIN_SIZE (0: none)       default 20000
#   ROOT_ENTRIES  hard links put in the tree filesystem's root directory itself, the top of the --scan walk
#             (40000 makes it larger than 1 MiB, so both must report it)          default 0
#   MIN_SIZE  --min-size in bytes, a multiple of 1 MiB (find gets -size +NM)       default 1048576
#   REPS      timed runs of each command, cold and lone; the least warm            default 5
#   WARM_SECONDS  warm runs go on until they have taken this long (hyperfine's default is 3)   default 3
#   IMG_SIZE  size of each sparse image (truncate syntax)                          default 2G
#   LOOP_DIO  1: loop devices do direct I/O on their images, as a disk would; 0: buffered (bench/lib.sh) default 1
#   WONK      wonk binary; default: the shipped, static one (scripts/release)
#   PROFILE   a command prefix; at the end each wonk command runs once more under it, warm, with %n in it
#             replaced by htree, who or scan: "strace -c -f", "perf record -g -o /tmp/wonk-%n.data"
#   PROFILE_COLD=1  drop caches before each profiled run
#
# Cleanup (EXIT, INT, TERM; bench/lib.sh): unmounts the mount points it recorded, detaches the loop devices it
# recorded (and any still attached to its own image files), then removes its temporary directory; nothing else is
# touched.
set -euo pipefail
export LC_ALL=C
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENTRIES=${ENTRIES:-1000000}
TOP=${TOP:-100}
SUB=${SUB:-1000}
DEPTH=${DEPTH:-10}
BIG=${BIG:-60000 100000 40000}
MEDIUM=${MEDIUM:-20000}
ROOT_ENTRIES=${ROOT_ENTRIES:-0}
MIN_SIZE=${MIN_SIZE:-1048576}
REPS=${REPS:-5}
WARM_SECONDS=${WARM_SECONDS:-3}
IMG_SIZE=${IMG_SIZE:-2G}
PROFILE=${PROFILE:-}
PROFILE_COLD=${PROFILE_COLD:-0}

need_whole_numbers ENTRIES TOP SUB DEPTH MEDIUM ROOT_ENTRIES MIN_SIZE REPS WARM_SECONDS
for b in $BIG; do [[ $b =~ ^[0-9]+$ ]] || die "BIG=$BIG: give whole numbers"; done
(( ENTRIES >= 1 && TOP >= 2 && SUB >= 2 && REPS >= 1 )) || die "need ENTRIES, REPS >= 1 and TOP, SUB >= 2"
(( MIN_SIZE >= 1048576 && MIN_SIZE % 1048576 == 0 )) || die "MIN_SIZE must be a multiple of 1 MiB"
need_root "loop devices, mounts, drop_caches"
need_tools mkfs.ext4 losetup mount umount mountpoint jq find stat realpath xargs
command -v gcc >/dev/null || command -v python3 >/dev/null || die "needs gcc or python3 (to make hard links fast)"

need_wonk
bench_start wonk-htree-bench
copy_wonk

# mklinks DIR N PREFIX SRCDIR: N hard links DIR/PREFIX<number> (names of 20 characters), to empty files made in
# SRCDIR, a new one every 60,000 links (ext4 allows at most 65,000 links to one inode).
if command -v gcc >/dev/null; then
    cat >"$dir/mklinks.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: mklinks DIR N PREFIX SRCDIR\n"); return 2; }
    long n = atol(argv[2]);
    int width = 20 - (int)strlen(argv[3]);
    if (width < 7) width = 7;
    int dst = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC), src = open(argv[4], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dst < 0 || src < 0) { perror("open"); return 1; }
    char s[256], d[256];
    for (long i = 0; i < n; i++) {
        if (i % 60000 == 0) {
            snprintf(s, sizeof s, "%s-%ld", argv[3], i / 60000);
            int fd = openat(src, s, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) { perror(s); return 1; }
            close(fd);
        }
        snprintf(d, sizeof d, "%s%0*ld", argv[3], width, i);
        if (linkat(src, s, dst, d, 0) != 0) { perror(d); return 1; }
    }
    return 0;
}
EOF
    gcc -O2 -o "$dir/mklinks" "$dir/mklinks.c"
    mklinks() { "$dir/mklinks" "$@"; }
else
    mklinks() {
        python3 - "$@" <<'EOF'
import os, sys
d, n, p, s = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
w = max(7, 20 - len(p))
for i in range(n):
    if i % 60000 == 0:
        src = os.path.join(s, f"{p}-{i // 60000}")
        os.close(os.open(src, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    os.link(src, os.path.join(d, f"{p}{i:0{w}d}"))
EOF
    }
fi

# bench KEY_A FN_A KEY_B FN_B: FN_A and FN_B each run one command with run_to or run_wonk, which time it
# (spawn_timed, bench/lib.sh: last_us) and name its output file (last_out). CHECK_A / CHECK_B (function names)
# verify a run's output, untimed. Three ways, medians to $dir/results as "KEY cold|warm|lone MEDIAN_MS":
#   cold: REPS runs of each, caches dropped before every run, A and B alternating; checked after each run.
#   warm: as `hyperfine -N` runs a command: an untimed warm-up, then runs in series, all spawned by one timer
#         process (bench/lib.sh spawn_series), so that no shell or timer starts between two runs, at least REPS of
#         them and at least WARM_SECONDS of them (at most 5000); each run's output goes to a file of its own and
#         is checked after the series.
#   lone: REPS runs of each, A and B alternating, each checked after it: every run comes right after the other
#         command and a check. A millisecond command then also pays for refilling the CPU caches and TLBs
#         that find's walk emptied; a second-long one does not notice.
bench() {
    local ka=$1 fa=$2 kb=$3 fb=$4 r
    local -a a_cold=() b_cold=() a_lone=() b_lone=()
    for ((r = 0; r < REPS; r++)); do
        drop_caches; "$fa"; a_cold+=("$last_us"); "$CHECK_A"
        drop_caches; "$fb"; b_cold+=("$last_us"); "$CHECK_B"
    done
    "$fa"; "$CHECK_A"; "$fb"; "$CHECK_B"
    for ((r = 0; r < REPS; r++)); do
        "$fa"; a_lone+=("$last_us"); "$CHECK_A"
        "$fb"; b_lone+=("$last_us"); "$CHECK_B"
    done
    record "$ka" cold "${a_cold[@]}"
    record "$kb" cold "${b_cold[@]}"
    series "$fa" "$CHECK_A"
    record "$ka" warm "${series_us[@]}"
    series "$fb" "$CHECK_B"
    record "$kb" warm "${series_us[@]}"
    record "$ka" lone "${a_lone[@]}"
    record "$kb" lone "${b_lone[@]}"
}
# series FN CHECK: FN's command run in series by spawn_series (series_n runs): one run to learn how long it takes,
# then a series whose first run is a warm-up and whose others are timed (series_us), at least REPS of them and at
# least WARM_SECONDS of them; each of their outputs is then put in FN's output file and checked.
series_n=0
series() {
    local fn=$1 check=$2 r n
    series_n=1
    "$fn"
    n=$(awk -v t="${series_us[0]}" -v s="$WARM_SECONDS" -v m="$REPS" \
        'BEGIN { n = int(s * 1e6 / (t > 0 ? t : 1)) + 1; if (n < m) n = m; if (n > 5000) n = 5000; print n }')
    series_n=$((n + 1))
    "$fn"
    series_n=0
    series_us=("${series_us[@]:1}")
    for ((r = 2; r <= n + 1; r++)); do
        mv "$last_out.$r" "$last_out"
        "$check"
    done
    rm -f "$last_out.1"
}
# record KEY MODE MICROSECONDS...: the median in ms to $dir/results, every run to $dir/runs.
record() {
    local k=$1 m=$2
    shift 2
    echo "$k $m $(median "$@" | awk '{ printf "%.3f", $1 / 1000 }')" >>"$dir/results"
    if (( $# <= 20 )); then
        printf '  %-20s %s: %s\n' "$k" "$m" "$*" >>"$dir/runs"
    else
        printf '%s\n' "$@" | sort -n | awk -v k="$k" -v m="$m" '{ v[NR] = $1 } END {
            printf "  %-20s %s: %d runs: min %d, 10%% %d, median %d, 90%% %d, max %d\n", k, m, NR, v[1],
                v[int(NR * 0.1) + 1], v[int((NR + 1) / 2)], v[int(NR * 0.9)], v[NR] }' >>"$dir/runs"
    fi
}
result() { awk -v k="$1" -v m="$2" '$1 == k && $2 == m { print $3 }' "$dir/results"; }

# run_to OUT CMD ARGS...: CMD timed by spawn_timed, its output in OUT; within `series`, series_n runs of it by
# spawn_series, their outputs in OUT.1, OUT.2, ...
run_to() {
    last_out=$1
    shift
    if (( series_n )); then
        spawn_series "$series_n" "$last_out" "$@"
    else
        spawn_timed "$@" >"$last_out"
    fi
}
# run_wonk OUT ARGS...: wonk run by run_to; it exits 0-2 with a report, 3 when it could not do its job.
run_wonk() {
    local out=$1 rc=0
    shift
    run_to "$out" "$WONK" "$@" --json 2>>"$dir/wonk.stderr" || rc=$?
    (( rc <= 2 )) || { echo "htree.sh: wonk $* exited $rc" >&2; exit 1; }
}

: >"$dir/results"
: >"$dir/runs"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. A flat directory of ENTRIES entries. ---
echo "making the flat directory: $ENTRIES hard links..." >&2
t0=${EPOCHREALTIME//[.,]/}
make_fs flat -N 16384
dev_a=$fs_dev mnt_a=$fs_mnt
flat=$mnt_a/flat
mkdir "$flat" "$mnt_a/.src"
mklinks "$flat" "$ENTRIES" f "$mnt_a/.src"
sync
flat_size=$(stat -c %s "$flat")
echo "  $flat: $ENTRIES entries, $flat_size bytes, on $dev_a, in $(secs_since "$t0") s" >&2

htree_estimates=()
cmd_wonk_htree() { run_wonk "$dir/htree.json" htree "$flat"; }
cmd_find_flat() { run_to "$dir/find-flat.out" sh -c 'find "$1" -maxdepth 1 | wc -l' sh "$flat"; }
check_wonk_htree() {
    local e
    e=$(jq -r '.findings[0].evidence.report.index.entries.estimate // "none"' "$dir/htree.json")
    [[ $e =~ ^[0-9]+$ ]] || { bad "wonk htree reported no entry estimate"; e=0; }
    htree_estimates+=("$e")
}
check_find_flat() {
    local n
    n=$(<"$dir/find-flat.out")
    (( n == ENTRIES + 1 )) || bad "find DIR -maxdepth 1 | wc -l said $n, expected $((ENTRIES + 1)) (entries and DIR)"
}
echo "timing wonk htree and find -maxdepth 1 ($REPS cold, $REPS lone and ${WARM_SECONDS}+ s of warm runs each)..." >&2
CHECK_A=check_wonk_htree CHECK_B=check_find_flat bench htree-wonk cmd_wonk_htree htree-find cmd_find_flat
ix='.findings[0].evidence.report.index'
htree_info=$(jq -r "$ix | \"levels \(.levels + 1) of \(.max_levels), root \(.root.count)/\(.root.limit), \
\(.index_blocks) index blocks, \(.leaf_blocks) leaves; \(.entries.sampled_leaves) leaves sampled \
(exact: \(.entries.exact)), relative std error \(.entries.relative_std_error * 10000 | round / 100)%; \
read \(.reads.index_blocks) index + \(.reads.leaf_blocks) leaf blocks\"" "$dir/htree.json")
estimate=$(printf '%s\n' "${htree_estimates[@]}" | sort -u | tr '\n' ' ')

# The exec floor: wonk doing nothing (cold pages the binary and its libraries in).
cmd_wonk_version() { run_to "$dir/version.out" "$WONK" --version; }
cmd_true() { run_to "$dir/true.out" /bin/true; }
CHECK_A=: CHECK_B=: bench floor-wonk-version cmd_wonk_version floor-true cmd_true

# --- 2. A tree of TOP x SUB directories, and a chain of DEPTH more. ---
echo "making the tree: $TOP x $SUB directories and a chain of $DEPTH..." >&2
t0=${EPOCHREALTIME//[.,]/}
make_fs tree -N $((TOP * SUB + TOP + DEPTH + 8192))
dev_b=$fs_dev mnt_b=$fs_mnt
tree=$mnt_b/tree
mkdir "$tree" "$mnt_b/.src"
wt=${#TOP} ws=${#SUB}
dname() { printf "d%0${wt}d" "$1"; }
ename() { printf "e%0${ws}d" "$1"; }
for ((i = 0; i < TOP; i++)); do
    d=$tree/$(dname "$i")
    mkdir "$d"
    (cd "$d" && seq -f "e%0${ws}g" 0 $((SUB - 1)) | xargs mkdir)
done
target=$tree/$(dname $((TOP / 2)))/$(ename $((SUB * 3 / 4)))
for ((k = 1; k <= DEPTH; k++)); do target=$target/deep$k; done
mkdir -p "$target"
target=$(realpath "$target")
ino=$(stat -c %i "$target")
sync
ndirs=$((TOP * SUB + TOP + DEPTH + 1))
echo "  $tree: $ndirs directories; target $target (inode $ino, depth $((DEPTH + 3))) in $(secs_since "$t0") s" >&2

who_paths=()
loop_b=${dev_b#/dev/}
cmd_wonk_who() { run_wonk "$dir/who.json" who "$loop_b:$ino"; }
cmd_find_inum() { run_to "$dir/find-inum.out" find "$mnt_b" -inum "$ino"; }
check_wonk_who() {
    local p by
    p=$(jq -r '.path.path // "none"' "$dir/who.json")
    by=$(jq -r '.path.resolved_by // "none"' "$dir/who.json")
    [[ $p == "$target" ]] || bad "wonk who $loop_b:$ino said $p, expected $target"
    who_paths+=("$by")
}
check_find_inum() {
    [[ $(<"$dir/find-inum.out") == "$target" ]] || bad "find -inum $ino said '$(<"$dir/find-inum.out")', expected $target"
}
echo "timing wonk who $loop_b:$ino and find -inum..." >&2
CHECK_A=check_wonk_who CHECK_B=check_find_inum bench who-wonk cmd_wonk_who who-find cmd_find_inum
resolved_by=$(printf '%s\n' "${who_paths[@]}" | sort | uniq -c | awk '{ printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1 }')

# --- 3. The same tree with big directories, for --scan. ---
echo "adding big directories ($BIG entries; $ROOT_ENTRIES in the root) and a medium one ($MEDIUM)..." >&2
t0=${EPOCHREALTIME//[.,]/}
spots=("$tree/$(dname 1)" "$target" "$mnt_b" "$tree/$(dname $((TOP - 2)))/$(ename 1)")
big_dirs=() big_entries=()
i=0
for n in $BIG; do
    d=${spots[i % ${#spots[@]}]}/big-$i
    mkdir "$d"
    mklinks "$d" "$n" "b$i-" "$mnt_b/.src"
    big_dirs+=("$d") big_entries+=("$n")
    i=$((i + 1))
done
if (( ROOT_ENTRIES > 0 )); then
    mklinks "$mnt_b" "$ROOT_ENTRIES" r- "$mnt_b/.src"
    big_dirs+=("$mnt_b") big_entries+=("$ROOT_ENTRIES")
fi
if (( MEDIUM > 0 )); then
    medium=$tree/$(dname $((TOP - 1)))/medium
    mkdir "$medium"
    mklinks "$medium" "$MEDIUM" m- "$mnt_b/.src"
fi
sync
mib=$((MIN_SIZE >> 20))
: >"$dir/expected"
for ((i = 0; i < ${#big_dirs[@]}; i++)); do
    s=$(stat -c %s "${big_dirs[i]}")
    echo "  ${big_dirs[i]}: ${big_entries[i]} entries, $s bytes" >&2
    if (( s > MIN_SIZE )); then
        echo "${big_dirs[i]}" >>"$dir/expected"
    else
        echo "htree.sh: warning: ${big_dirs[i]} is not above $MIN_SIZE bytes; raise its BIG entry" >&2
    fi
done
if (( MEDIUM > 0 )); then
    s=$(stat -c %s "$medium")
    echo "  $medium: $MEDIUM entries, $s bytes (below $MIN_SIZE: neither should report it)" >&2
    (( s <= MIN_SIZE )) || echo "$medium" >>"$dir/expected"
fi
sort -o "$dir/expected" "$dir/expected"
echo "  in $(secs_since "$t0") s" >&2

cmd_wonk_scan() { run_wonk "$dir/scan.json" htree --scan "$mnt_b" --min-size "$MIN_SIZE"; }
cmd_find_big() { run_to "$dir/find-big.out" find "$mnt_b" -type d -size "+${mib}M"; }
check_wonk_scan() {
    jq -r '.findings[].subject' "$dir/scan.json" | sort >"$dir/scan-found"
    cmp -s "$dir/scan-found" "$dir/expected" || bad "wonk htree --scan found [$(tr '\n' ' ' <"$dir/scan-found")]," \
        "expected [$(tr '\n' ' ' <"$dir/expected")]"
    [[ $(jq '.blind_spots | length' "$dir/scan.json") == 0 ]] || bad "wonk htree --scan reported blind spots"
}
check_find_big() {
    sort -o "$dir/find-big.out" "$dir/find-big.out"
    cmp -s "$dir/find-big.out" "$dir/expected" || bad "find -type d -size +${mib}M found [$(tr '\n' ' ' <"$dir/find-big.out")]," \
        "expected [$(tr '\n' ' ' <"$dir/expected")]"
}
echo "timing wonk htree --scan and find -type d -size +${mib}M..." >&2
CHECK_A=check_wonk_scan CHECK_B=check_find_big bench scan-wonk cmd_wonk_scan scan-find cmd_find_big
same=no
cmp -s "$dir/scan-found" "$dir/find-big.out" && same=yes
walked=$(jq -r '.checks[0].stats.directories_walked' "$dir/scan.json")
scan_stats=$(jq -r '[.checks[0].stats | to_entries[] | "\(.key)=\(.value)"] | join(" ")' "$dir/scan.json")
scan_estimates=$(for ((i = 0; i < ${#big_dirs[@]}; i++)); do
    jq -r --arg d "${big_dirs[i]}" --argjson n "${big_entries[i]}" '.findings[] | select(.subject == $d)
        | .evidence.report.index.entries | "\($d | sub(".*/"; "")): \(.estimate) of \($n) (\((.estimate - $n) * 10000 / $n
        | round / 100)%\(if .exact then ", exact" else "" end))"' "$dir/scan.json"
done | paste -sd ';' | sed 's/;/; /g')

# --- Report. ---
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
kernel=$(uname -r)
echo
echo "wonk htree / who / --scan against find: $(nproc) cores, kernel $kernel, REPS=$REPS, WARM_SECONDS=$WARM_SECONDS," \
    "load average $load_start" \
    "at the start and $load_end at the end; loop devices with LOOP_DIO=$LOOP_DIO"
echo "flat directory: $ENTRIES entries, $flat_size bytes; wonk: $htree_info"
echo "tree: $ndirs directories; who target at depth $((DEPTH + 3)), inode $ino; wonk resolved it by $resolved_by"
echo "--scan: wonk $scan_stats"
echo
row() { # LABEL KEY COMMAND
    printf '%-22s %-60s %10.1f %10.1f %10.1f\n' "$1" "$3" "$(result "$2" cold)" "$(result "$2" warm)" \
        "$(result "$2" lone)"
}
printf '%-22s %-60s %10s %10s %10s\n' test "command (medians; runs in the list below)" "cold ms" "warm ms" "lone ms"
row "flat dir, $ENTRIES" htree-wonk "wonk htree DIR --json"
row "" htree-find "find DIR -maxdepth 1 | wc -l"
row "inode to path" who-wonk "wonk who $loop_b:$ino --json"
row "" who-find "find MOUNT -inum $ino"
row "--scan, $walked dirs" scan-wonk "wonk htree --scan MOUNT --min-size $MIN_SIZE --json"
row "" scan-find "find MOUNT -type d -size +${mib}M"
row "exec floor" floor-wonk-version "wonk --version"
row "" floor-true "/bin/true"
echo

# The target is judged cold and warm; lone (each run right after the other command) is shown beside them.
verdict() { # NAME KEY_WONK KEY_FIND TARGET
    local c w l
    ratio() { awk -v f="$(result "$2" "$1")" -v w="$(result "$3" "$1")" 'BEGIN { printf "%.1f", f / w }'; }
    c=$(ratio cold "$3" "$2") w=$(ratio warm "$3" "$2") l=$(ratio lone "$3" "$2")
    printf '%-8s find / wonk: cold %8sx  warm %8sx  (lone %8sx)   target >= %sx: cold %s, warm %s\n' \
        "$1" "$c" "$w" "$l" "$4" \
        "$(awk -v r="$c" -v t="$4" 'BEGIN { print (r >= t ? "MET" : "MISSED") }')" \
        "$(awk -v r="$w" -v t="$4" 'BEGIN { print (r >= t ? "MET" : "MISSED") }')"
}
verdict htree htree-wonk htree-find 100
verdict who who-wonk who-find 1000
verdict --scan scan-wonk scan-find 1
for e in $estimate; do
    awk -v e="$e" -v n="$ENTRIES" 'BEGIN { d = (e - n) / n * 100; a = d < 0 ? -d : d
        printf "entries  wonk estimate %d, true %d: %+.2f%%   target within 5%%: %s\n", e, n, d, (a <= 5 ? "MET" : "MISSED") }'
done
echo "--scan   wonk and find found the same $(wc -l <"$dir/find-big.out") directories: $same" \
    "(expected $(wc -l <"$dir/expected")); wonk's estimates: $scan_estimates"
echo
echo "every run, in microseconds:"
cat "$dir/runs"
report_wonk_stderr

if [[ -n $PROFILE ]]; then
    for name in htree who scan; do
        echo
        echo "one wonk $name run under: ${PROFILE//%n/$name}"
        (( PROFILE_COLD )) && drop_caches
        case $name in
        htree) set -- htree "$flat" ;;
        who) set -- who "$loop_b:$ino" ;;
        scan) set -- htree --scan "$mnt_b" --min-size "$MIN_SIZE" ;;
        esac
        # shellcheck disable=SC2086  # PROFILE is a command line
        ${PROFILE//%n/$name} "$WONK" "$@" --json >/dev/null || (( $? <= 2 ))
    done
fi

exit_if_wrong
