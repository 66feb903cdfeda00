#!/usr/bin/env bash
# Benchmark the kmsg rule engine against what a user would otherwise run: `grep -E -c` with the same patterns.
#
#   bench/kmsg.sh
#
# Generates LINES kernel log lines in dmesg format (default 1,000,000): mostly the unrelated chatter of a busy
# node (audit, veth, conntrack, mounts, OOM dumps, call traces), and MATCH_PERMILLE of them (default 20) lines that
# a rule matches (full htree index pairs, OOM kills, hung tasks, I/O errors, oopses, lockups, ...). Then times
# `grep -E -c PATTERNS` (LC_ALL=C, its fastest) and wonk's engine (examples/kmsg_bench.rs) over the same file,
# best of REPS (default 5), and prints lines/s and the ratio. The two must count the same matching lines.
#
# Environment: LINES, MATCH_PERMILLE, REPS, KEEP=1 (keep the generated file), BENCH (binary to test; default:
# build examples/kmsg_bench in release mode).
set -euo pipefail

LINES=${LINES:-1000000}
MATCH_PERMILLE=${MATCH_PERMILLE:-20}
REPS=${REPS:-5}
if (( LINES < 1000 || REPS < 1 || MATCH_PERMILLE < 0 || MATCH_PERMILLE > 1000 )); then
    echo "kmsg.sh: need LINES >= 1000, REPS >= 1 and 0 <= MATCH_PERMILLE <= 1000" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${BENCH:-} ]]; then
    echo "building examples/kmsg_bench (cargo build --release --example kmsg_bench)..." >&2
    (cd "$repo" && cargo build --release --quiet --example kmsg_bench)
    BENCH=$repo/target/release/examples/kmsg_bench
fi
[[ -x $BENCH ]] || { echo "kmsg.sh: $BENCH is not executable" >&2; exit 2; }

dir=$(mktemp -d /tmp/wonk-bench-kmsg.XXXXXX)
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $dir/kern.log" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
log=$dir/kern.log

# The same problems as the rules, as one extended regular expression.
patterns=(
    'index full, reach max htree level'
    'Large directory feature is not enabled'
    'oom-kill:constraint='
    'Killed process [0-9]+ \('
    'task .+:[0-9]+ blocked for more than [0-9]+ seconds'
    'unregister_netdevice: waiting for .+ to become free'
    'BUG: '
    'Oops: '
    'divide error: '
    'general protection fault'
    'kernel BUG at'
    'Kernel panic - not syncing'
    'EXT4-fs error'
    'EXT4-fs warning'
    'Remounting filesystem read-only'
    'Buffer I/O error on dev'
    'XFS \(.*(Shutting down filesystem|shut down)'
    'xfs_do_force_shutdown'
    '(CE|UE) memory read error'
    'soft lockup'
    'hard LOCKUP'
    'I/O error, dev '
    'critical (medium|target) error, dev '
    'nf_conntrack: .*table full'
    'rcu_[a-z]+ (self-)?detected stall'
    'XFS \(.*Metadata corruption detected'
    '\[Hardware Error\]: event severity: '
)
regex=$(IFS='|'; echo "${patterns[*]}")

echo "generating $LINES lines ($MATCH_PERMILLE per mille matching) in $log..." >&2
awk -v n="$LINES" -v permille="$MATCH_PERMILLE" 'BEGIN {
    srand(42)
    t = 1000.0
    noise[0]  = "audit: type=1400 audit(1700000000.%03d:%d): apparmor=\"DENIED\" operation=\"open\" profile=\"cri-containerd.apparmor.d\" name=\"/proc/%d/status\" pid=%d comm=\"php-fpm\" requested_mask=\"r\" denied_mask=\"r\" fsuid=33 ouid=0"
    noise[1]  = "cni0: port %d(veth%08x) entered forwarding state"
    noise[2]  = "IPv6: ADDRCONF(NETDEV_CHANGE): veth%08x: link becomes ready"
    noise[3]  = "EXT4-fs (dm-%d): mounted filesystem %08x-28f3-4372-bf95-81bb53db964e r/w with ordered data mode. Quota mode: none."
    noise[4]  = "overlayfs: upperdir is in-use as upperdir/workdir of another mount %d, accessing files from both mounts will result in undefined behavior."
    noise[5]  = "nf_conntrack: default automatic helper assignment has been turned off for security reasons %d"
    noise[6]  = "TCP: request_sock_TCP: Possible SYN flooding on port %d. Sending cookies.  Check SNMP counters."
    noise[7]  = "device veth%08x entered promiscuous mode"
    noise[8]  = "eth0: renamed from tmp%05d"
    noise[9]  = "XFS (dm-%d): Ending clean mount"
    noise[10] = "Memory cgroup stats for /kubepods/burstable/pod%08x-d731-4186-803c-8c4a35a84627:"
    noise[11] = "[  %d]     0 %d     9737     8364     8000      364         0   118784        0             0 sh"
    noise[12] = " __schedule+0x%x/0xb40"
    noise[13] = "sd 0:0:0:0: [sda] %d 512-byte logical blocks: (1.07 TB/1000 GiB)"
    noise[14] = "perf: interrupt took too long (%d > 2500), lowering kernel.perf_event_max_sample_rate to 79750"
    noise[15] = "kauditd_printk_skb: %d callbacks suppressed"
    nn = 16
    hit[0] = "EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 2115663%02d) index full, reach max htree level :2"
    hit[1] = "EXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem"
    hit[2] = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod834b7b00-d731-4186-803c-8c4a35a84627/41b8343f32f8623c7d209428%02d,task_memcg=/kubepods/burstable/pod834b7b00-d731-4186-803c-8c4a35a84627/41b8343f32f8623c7d20942813b4a48c,task=php-fpm,pid=29164,uid=33"
    hit[3] = "Memory cgroup out of memory: Killed process 291%02d (php-fpm) total-vm:812340kB, anon-rss:524288kB, file-rss:1024kB, shmem-rss:0kB, UID:33 pgtables:1200kB oom_score_adj:-997"
    hit[4] = "INFO: task php-fpm:291%02d blocked for more than 122 seconds."
    hit[5] = "Buffer I/O error on dev sdb%d, logical block 0, async page read"
    hit[6] = "unregister_netdevice: waiting for veth%02d to become free. Usage count = 1"
    hit[7] = "EXT4-fs error (device sdb%d): ext4_lookup:1855: inode #131074: comm ls: deleted inode referenced: 131075"
    hit[8] = "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [stress:%d]"
    hit[9] = "XFS (dm-%d): Log I/O Error Detected. Shutting down filesystem"
    hit[10] = "nf_conntrack: nf_conntrack: table full, dropping packet %d"
    hit[11] = "blk_update_request: I/O error, dev sda, sector %d op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0"
    hit[12] = "rcu: INFO: rcu_sched detected stalls on CPUs/tasks: %d"
    hit[13] = "XFS (vda%d): Metadata corruption detected at xfs_buf_ioend+0x162/0x570 [xfs], xfs_inode block 0x2fc4e0 xfs_inode_buf_verify"
    hit[14] = "{%d}[Hardware Error]: event severity: corrected"
    nh = 15
    for (i = 0; i < n; i++) {
        t += rand() * 0.01
        if (rand() * 1000 < permille) {
            k = int(rand() * nh); msg = sprintf(hit[k], int(rand() * 20))
        } else {
            k = int(rand() * nn); r = int(rand() * 4000000)
            msg = sprintf(noise[k], r % 1000, r, r, r)
        }
        printf "[%12.6f] %s\n", t, msg
    }
}' >"$log"
echo "$(wc -l <"$log") lines, $(du -h "$log" | cut -f1)" >&2

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
less() { awk "BEGIN { exit !($1 < $2) }"; }
best_grep=""
for ((i = 0; i < REPS; i++)); do
    t0=$(now)
    grep_count=$(LC_ALL=C grep -E -c "$regex" "$log")
    t1=$(now)
    secs=$(calc "$t1 - $t0")
    if [[ -z $best_grep ]] || less "$secs" "$best_grep"; then best_grep=$secs; fi
done

best_wonk=""
best_rules=""
for ((i = 0; i < REPS; i++)); do
    out=$("$BENCH" "$log")
    field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$out"; }
    secs=$(field pipeline_secs)
    rules=$(field rules_secs)
    wonk_count=$(field matched)
    malformed=$(field malformed)
    if [[ -z $best_wonk ]] || less "$secs" "$best_wonk"; then best_wonk=$secs; fi
    if [[ -z $best_rules ]] || less "$rules" "$best_rules"; then best_rules=$rules; fi
done

echo
printf 'lines:                       %d (%s matching; grep counts %s, malformed %s)\n' "$LINES" "$wonk_count" "$grep_count" "$malformed"
printf 'grep -E -c (LC_ALL=C):       %10.0f lines/s  (%.3f s)\n' "$(calc "$LINES / $best_grep")" "$best_grep"
printf 'wonk reader + rules:         %10.0f lines/s  (%.3f s)\n' "$(calc "$LINES / $best_wonk")" "$best_wonk"
printf 'wonk rules alone:            %10.0f lines/s  (%.3f s)\n' "$(calc "$LINES / $best_rules")" "$best_rules"
printf 'ratio wonk/grep (pipeline):  %10.2f  (> 1: wonk is faster)\n' "$(calc "$best_grep / $best_wonk")"
if [[ $grep_count != "$wonk_count" ]]; then
    echo "kmsg.sh: MISMATCH: grep counts $grep_count matching lines, wonk $wonk_count" >&2
    exit 1
fi
