#!/usr/bin/env bash
# Benchmark the CPU cost of `wonk top` (its /proc sampler, and with WONK_BPF its BPF task iterator) against the
# /proc floor (examples/top_floor.rs) and psn from 0xtools, sampling a population of THREADS idle threads plus
# DSTATE threads stuck in D state; then the agent's D-state check (one `wonk dstate` a minute) both ways.
#
#   sudo PSN=/path/to/0xtools/bin/psn WONK_BPF=$(scripts/release --features bpf) THREADS=20000 bench/top.sh
#
# Environment:
#   HZ        samples per second, an integer (psn takes whole numbers)           default 20
#   DUR       seconds to sample, an integer (psn's -d takes whole seconds)        default 5
#   REPS      runs of each contender; the median (by CPU) is reported             default 3
#   THREADS   idle threads to start (blocked in pause())                          default 3000
#   PROCS     processes to spread them over                                       default 3
#   DSTATE    D-state threads (vfork parents waiting for a child that pauses)     default 4
#   WONK      wonk binary; default: the shipped, static one (scripts/release); runs `top --source proc`
#   WONK_BPF  a wonk built with the `bpf` feature; runs `top --source bpf`; skipped when unset
#   FLOOR     floor binary; default: cargo build --release --example top_floor
#   PSN       path to 0xtools' psn script; psn is skipped when unset
#   PSN_PYTHON  interpreter for psn; default: the real executable behind `python3`
#   PROFILE   a command prefix ("strace -c -f", "perf record -g -o /tmp/wonk-top.data"); runs one more
#             wonk under it at the end, with the population still in place
#
# CPU is user+sys of each contender's whole process tree (a small wrapper compiled at run time makes itself
# a child subreaper, reaps every descendant and reads RUSAGE_CHILDREN), so psn's `ps` children count too.
# Every process the script starts is recorded by pid and SIGKILLed by pid on exit (bench/lib.sh); nothing is
# killed by name.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HZ=${HZ:-20}
DUR=${DUR:-5}
REPS=${REPS:-3}
THREADS=${THREADS:-3000}
PROCS=${PROCS:-3}
DSTATE=${DSTATE:-4}
PSN=${PSN:-}
PROFILE=${PROFILE:-}

need_whole_numbers HZ DUR REPS THREADS PROCS DSTATE
(( HZ >= 1 && DUR >= 1 && REPS >= 1 && PROCS >= 1 && THREADS >= PROCS && DSTATE >= 1 )) ||
    die "need HZ, DUR, REPS, PROCS, DSTATE >= 1 and THREADS >= PROCS"
command -v cc >/dev/null || die "needs a C compiler (cc)"
command -v jq >/dev/null || die "needs jq (apt-get install jq)"

need_wonk
# The /proc contenders keep a descriptor per thread: with a hard limit below the population the floor skips the
# threads past it and wonk reads them by path. Raised for this script and its children where allowed.
if (( $(ulimit -Hn) < THREADS + 4096 )); then
    if ! { ulimit -Hn $(( THREADS + 4096 )) && ulimit -Sn $(( THREADS + 4096 )); } 2>/dev/null; then
        echo "descriptor limit $(ulimit -Hn) (not raised: no CAP_SYS_RESOURCE): the floor skips the threads past it," \
            "wonk reads them by path" >&2
    fi
fi
if [[ -z ${FLOOR:-} ]]; then
    echo "building the floor (cargo build --release --example top_floor)..." >&2
    (cd "$bench_repo" && cargo build --release --quiet --example top_floor)
    FLOOR=$bench_repo/target/release/examples/top_floor
fi
[[ -x $FLOOR ]] || die "$FLOOR is not executable"
if [[ -n ${WONK_BPF:-} ]]; then
    [[ -x $WONK_BPF ]] || die "WONK_BPF=$WONK_BPF is not executable"
fi
if [[ -n $PSN ]]; then
    [[ -r $PSN ]] || die "PSN=$PSN is not a readable file"
    PSN_PYTHON=${PSN_PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
    [[ -x $PSN_PYTHON ]] || die "PSN_PYTHON=$PSN_PYTHON is not executable"
fi

bench_start wonk-top-bench   # pids: every process started here, by pid (its cleanup SIGKILLs them and reaps ours)

# --- Helpers, compiled at run time. The binaries' names become the threads' comm. ---
cat >"$dir/idle.c" <<'EOF'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static void *idle(void *arg) { (void)arg; for (;;) pause(); return 0; }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;   /* threads in all, main included */
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 << 10);
    for (int i = 1; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &at, idle, 0)) { perror("pthread_create"); return 1; }
    }
    for (;;) pause();
}
EOF
cat >"$dir/dstate.c" <<'EOF'
#include <unistd.h>
/* The parent waits in D state (wait_for_vfork_done) for as long as the vfork child pauses. */
int main(void) { if (vfork() == 0) { pause(); _exit(0); } return 0; }
EOF
cat >"$dir/cpu.c" <<'EOF'
/* cpu OUT CMD ARGS...: runs CMD, reaps it and every descendant (as a child subreaper), and writes
   "user sys wall" in seconds of the whole tree to OUT. Exits with CMD's status. */
#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: cpu OUT CMD [ARGS...]\n"); return 2; }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t p = fork();
    if (p < 0) { perror("fork"); return 2; }
    if (p == 0) { execvp(argv[2], argv + 2); perror(argv[2]); _exit(127); }
    int st = 0, s;
    pid_t w;
    while ((w = waitpid(p, &st, 0)) < 0 && errno == EINTR) {}
    clock_gettime(CLOCK_MONOTONIC, &b);
    while ((w = wait(&s)) > 0 || (w < 0 && errno == EINTR)) {}
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror(argv[1]); return 2; }
    fprintf(f, "%ld.%06ld %ld.%06ld %.6f\n", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec,
            (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec,
            (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
EOF
cc -O2 -pthread -o "$dir/wonkbench-idle" "$dir/idle.c"
cc -O2 -w -o "$dir/wonkbench-dst" "$dir/dstate.c"
cc -O2 -o "$dir/cpu" "$dir/cpu.c"

# Waits up to 30 s for a condition, given as a command.
await() {
    local what=$1 i
    shift
    for ((i = 0; i < 300; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    die "timed out waiting for $what"
}
threads_of() { [[ $(awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null) == "$2" ]]; }
in_d_with_child() {
    [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) == D ]] &&
        [[ -n $(cat "/proc/$1/task/$1/children" 2>/dev/null) ]]
}

# --- The population. ---
echo "starting $THREADS idle threads in $PROCS processes and $DSTATE D-state threads..." >&2
for ((k = 0; k < PROCS; k++)); do
    n=$(( THREADS / PROCS + (k < THREADS % PROCS ? 1 : 0) ))
    "$dir/wonkbench-idle" "$n" &
    pids+=("$!")
    await "pid $! to start $n threads" threads_of "$!" "$n"
done
for ((k = 0; k < DSTATE; k++)); do
    "$dir/wonkbench-dst" &
    p=$!
    pids+=("$p")
    await "pid $p to enter D state" in_d_with_child "$p"
    for c in $(cat "/proc/$p/task/$p/children"); do pids+=("$c"); done
done
total=$(cat /proc/[0-9]*/status 2>/dev/null | awk '/^Threads:/ {n += $2} END {print n}')
echo "population ready: $total threads on the node (pids started: ${pids[*]})" >&2

cpu_of() { awk '{printf "cpu=%.3fs (user %.3f sys %.3f) wall=%.2fs", $1 + $2, $1, $2, $3}' "$dir/cpu.out"; }

# --- Runs. Each writes "user sys wall threads samples" to $dir/NAME.runs, one line per rep. ---
run_floor() {
    "$dir/cpu" "$dir/cpu.out" "$FLOOR" "$HZ" "$DUR" >"$dir/floor.out"
    local t s
    t=$(sed -n 's/.*threads=\([0-9]*\).*/\1/p' "$dir/floor.out")
    s=$(sed -n 's/.*samples=\([0-9]*\).*/\1/p' "$dir/floor.out")
    echo "$(cat "$dir/cpu.out") $t $s" >>"$dir/floor.runs"
    echo "  floor: $(cpu_of) $(cat "$dir/floor.out")" >&2
}
d_ok=1
# run_top NAME BINARY SOURCE: one `wonk top --source SOURCE`; its rows (comm, state) go to $dir/NAME.rows.
run_top() {
    local name=$1 bin=$2 source=$3 json=$dir/$1.$rep.json
    "$dir/cpu" "$dir/cpu.out" "$bin" top --source "$source" --hz "$HZ" -d "$DUR" --json >"$json"
    local t s d
    [[ $(jq -r '.source' "$json") == "$source" ]] || die "$name: ran $(jq -r '.source' "$json"), not $source"
    t=$(jq -r '.threads_seen' "$json")
    s=$(jq -r '.rounds' "$json")
    echo "$(cat "$dir/cpu.out") $t $s" >>"$dir/$name.runs"
    jq -r '.rows[] | select(.values[0] | startswith("wonkbench")) | "\(.values | join(" / ")): \(.avg_threads)"' \
        "$json" >"$dir/$name.rows"
    # The D-state threads must show up: comm wonkbench-dst in state D, about DSTATE of them on average.
    d=$(jq -r '[.rows[] | select(.values == ["wonkbench-dst", "Disk (Uninterruptible)"]) | .avg_threads]
               | add // 0' "$json")
    if awk -v d="$d" -v n="$DSTATE" 'BEGIN {exit !(d >= n - 0.5 && d <= n + 0.5)}'; then
        echo "  $name: $(cpu_of) samples=$s threads=$t; wonkbench-dst in D: avg_threads=$d (expected $DSTATE): ok" >&2
    else
        echo "  $name: $(cpu_of) samples=$s threads=$t; wonkbench-dst in D: avg_threads=$d (expected $DSTATE): MISSING" >&2
        d_ok=0
    fi
}
run_wonk() { run_top wonk "$WONK" proc; }
run_bpf() { run_top bpf "$WONK_BPF" bpf; }
run_psn() {
    # psn rescans processes at --ps-hz (default 2); 1 matches wonk's one rescan a second.
    "$dir/cpu" "$dir/cpu.out" "$PSN_PYTHON" "$PSN" -d "$DUR" --sample-hz "$HZ" --ps-hz 1 >"$dir/psn.out" 2>&1
    local t s
    s=$(sed -n 's/^samples: *\([0-9]*\).*/\1/p' "$dir/psn.out")
    t=$(sed -n 's/.*threads: *\([0-9]*\).*/\1/p' "$dir/psn.out")
    echo "$(cat "$dir/cpu.out") $t $s" >>"$dir/psn.runs"
    echo "  psn:   $(cpu_of) samples=$s threads=$t; $(grep -m1 'wonkbench-dst' "$dir/psn.out" | tr -s ' ' || echo 'no wonkbench-dst row')" >&2
}

contenders=(floor wonk)
if [[ -n ${WONK_BPF:-} ]]; then
    contenders+=(bpf)
else
    echo "bpf: skipped (set WONK_BPF to a wonk built with --features bpf to include it)" >&2
fi
if [[ -n $PSN ]]; then
    contenders+=(psn)
else
    echo "psn: skipped (set PSN=/path/to/0xtools/bin/psn to include it)" >&2
fi
for ((rep = 1; rep <= REPS; rep++)); do
    echo "rep $rep/$REPS (HZ=$HZ, DUR=$DUR s)..." >&2
    for c in "${contenders[@]}"; do "run_$c"; done
done

# --- Report: the median rep by CPU. ---
median_rep() { # prints "cpu user sys wall threads samples" of the median rep
    awk '{printf "%.6f %s\n", $1 + $2, $0}' "$dir/$1.runs" | sort -n -k1,1 | sed -n "$(( (REPS + 1) / 2 ))p"
}
echo
echo "wonk top vs the /proc floor and psn: HZ=$HZ, DUR=${DUR}s, median of $REPS, $total threads on the node"
echo "($(nproc) cores, kernel $(uname -r)); CPU = user+sys of the process tree; us/thr/smp = CPU / (threads x samples)"
printf '%-7s %8s %8s %8s %8s %8s %8s %10s %9s %8s\n' contender "CPU s" "user s" "sys s" "wall s" threads samples \
    "us/thr/smp" "ms/round" "% core"
declare -A cpu per round
for c in "${contenders[@]}"; do
    read -r tot u s w t n < <(median_rep "$c")
    cpu[$c]=$tot
    per[$c]=$(awk -v c="$tot" -v t="$t" -v n="$n" 'BEGIN {printf "%.3f", c * 1e6 / (t * n)}')
    round[$c]=$(awk -v c="$tot" -v n="$n" 'BEGIN {printf "%.6f", c * 1000 / n}')
    printf '%-7s %8.3f %8.3f %8.3f %8.2f %8d %8d %10s %9.3f %7.1f%%\n' "$c" "$tot" "$u" "$s" "$w" "$t" "$n" \
        "${per[$c]}" "$(awk -v c="$tot" -v n="$n" 'BEGIN {print c * 1000 / n}')" "$(awk -v c="$tot" -v w="$w" 'BEGIN {print c * 100 / w}')"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
r=$(ratio "${cpu[wonk]}" "${cpu[floor]}")
rp=$(ratio "${per[wonk]}" "${per[floor]}")
verdict=$(awk -v r="$r" 'BEGIN {print (r <= 1.3 ? "MET" : "MISSED")}')
echo "wonk / floor: ${r}x CPU (${rp}x per thread-sample); target <= 1.3x: $verdict"
if [[ -n $PSN ]]; then
    r=$(ratio "${cpu[psn]}" "${cpu[wonk]}")
    rp=$(ratio "${per[psn]}" "${per[wonk]}")
    verdict=$(awk -v r="$r" 'BEGIN {print (r >= 5 ? "MET" : "MISSED")}')
    echo "psn / wonk:   ${r}x CPU (${rp}x per thread-sample); target >= 5x: $verdict"
else
    echo "psn / wonk:   skipped (PSN unset)"
fi
if [[ -n ${WONK_BPF:-} ]]; then
    # Per round: at 20,000 threads the /proc contenders cannot keep up with HZ and run fewer rounds.
    r=$(ratio "${round[floor]}" "${round[bpf]}")
    verdict=$(awk -v r="$r" 'BEGIN {print (r >= 10 ? "MET" : "MISSED")}')
    echo "floor / bpf:  ${r}x CPU per round; target >= 10x: $verdict"
    if cmp -s "$dir/wonk.rows" "$dir/bpf.rows"; then
        echo "rows: bpf and proc report the same wonkbench rows: $(paste -sd';' "$dir/bpf.rows")"
    else
        echo "rows: DIFFER (last rep): proc: $(paste -sd';' "$dir/wonk.rows"); bpf: $(paste -sd';' "$dir/bpf.rows")"
    fi
    # The agent runs the D-state check once a minute (--dstate-interval 60): one process's worth of each.
    echo
    echo "agent D-state check (one wonk dstate run; share of one core at the default 60 s interval):"
    for src in proc bpf; do
        bin=$WONK
        [[ $src == bpf ]] && bin=$WONK_BPF
        : >"$dir/dstate.$src.runs"
        for ((rep = 1; rep <= REPS; rep++)); do
            "$dir/cpu" "$dir/cpu.out" "$bin" dstate --source "$src" --json >"$dir/dstate.json" || true
            [[ $(jq -r '.checks[0].details.source' "$dir/dstate.json") == "$src" ]] ||
                die "dstate --source $src ran $(jq -r '.checks[0].details.source' "$dir/dstate.json")"
            echo "$(cat "$dir/cpu.out") 0 0" >>"$dir/dstate.$src.runs"
        done
        read -r tot u s w _ _ < <(median_rep "dstate.$src")
        printf '  %-5s CPU %7.1f ms (user %.1f sys %.1f), wall %.1f ms: %.3f%% of a core\n' "$src" \
            "$(awk -v c="$tot" 'BEGIN {print c * 1000}')" "$(awk -v c="$u" 'BEGIN {print c * 1000}')" \
            "$(awk -v c="$s" 'BEGIN {print c * 1000}')" "$(awk -v c="$w" 'BEGIN {print c * 1000}')" \
            "$(awk -v c="$tot" 'BEGIN {print c * 100 / 60}')"
    done
fi
if (( d_ok )); then
    echo "D-state check: wonk reported $DSTATE wonkbench-dst threads in \"Disk (Uninterruptible)\" in every rep: ok"
else
    echo "D-state check: FAILED: some wonk run did not report the $DSTATE D-state threads; results are not valid"
fi

if [[ -n $PROFILE ]]; then
    echo >&2
    echo "profiling one more wonk run: $PROFILE $WONK top --hz $HZ -d $DUR --json" >&2
    # shellcheck disable=SC2086  # PROFILE is a command prefix
    $PROFILE "$WONK" top --hz "$HZ" -d "$DUR" --json >/dev/null
fi
(( d_ok )) || exit 1
