// SPDX-License-Identifier: GPL-2.0
// wonk's task sampler (src/host/tasks/bpf.rs): an `iter/task` program. Reading the iterator's file walks every task in
// the kernel once and writes one `struct rec` (plus its kernel stack, when asked for) for each task whose state
// is in `state_mask`; the first record of a walk is a header naming the reading process, the last counts the tasks.
//
// Built by build.rs with clang -target bpf against libbpf's headers. The few kernel fields read are declared
// below with preserve_access_index: the loader relocates them against the running kernel's BTF (CO-RE), so no
// vmlinux.h is generated at build time.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef int pid_t;

struct kernfs_node {
	u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int __state;
	unsigned int flags;
	int exit_state;
	pid_t pid;
	pid_t tgid;
	char comm[16];
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

struct pt_regs {
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

// include/linux/sched.h: the state bits task_state_index() looks at.
#define TASK_REPORT 0x7f
#define TASK_UNINTERRUPTIBLE 0x2
#define TASK_NOLOAD 0x400
#define TASK_IDLE (TASK_UNINTERRUPTIBLE | TASK_NOLOAD)
#define TASK_RTLOCK_WAIT 0x1000
#define TASK_FROZEN 0x8000
#define TASK_REPORT_IDLE 0x80
#define PF_KTHREAD 0x00200000

#define MAX_FRAMES 64

// Index of a state in "RSDTtXZPI", as /proc/PID/stat reports it (task_state_index() in include/linux/sched.h).
static __always_inline u32 state_index(struct task_struct *t)
{
	u32 s = t->__state;
	u32 r = (s | (u32)t->exit_state) & TASK_REPORT;
	if ((s & TASK_IDLE) == TASK_IDLE)
		r = TASK_REPORT_IDLE;
	if ((s & TASK_RTLOCK_WAIT) || (s & TASK_FROZEN))
		r = TASK_UNINTERRUPTIBLE;
	// fls(r): 0 for running, else the 1-based index of the highest bit set.
	u32 i = 0;
#pragma unroll
	for (int b = 7; b >= 0; b--) {
		if (r & (1u << b)) {
			i = b + 1;
			break;
		}
	}
	return i;
}

// Set by the loader before the program is loaded.
const volatile u32 state_mask = (1 << 0) | (1 << 2); // R and D
const volatile u32 want_stack = 0;

#define KIND_HEADER 1
#define KIND_TASK 2
#define KIND_END 3

struct rec {
	u32 kind;
	u32 tgid;      // header: the reading process's tgid
	u32 tid;
	u32 state;     // index in "RSDTtXZPI"
	u32 flags;     // task->flags
	u32 stack_len; // bytes of stack that follow
	s64 syscall;   // the syscall number a sleeping task is in, -1 for none; not read for a running task
	u64 cgroup_id; // the task's cgroup on the v2 hierarchy
	char comm[16];
	u64 stack[MAX_FRAMES];
};

#define HEAD_LEN __builtin_offsetof(struct rec, stack)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct rec);
} scratch SEC(".maps");

SEC("iter/task")
int sample(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	u32 zero = 0;
	struct rec *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 0;
	u32 me = bpf_get_current_pid_tgid() >> 32;
	if (ctx->meta->seq_num == 0) {
		__builtin_memset(r, 0, HEAD_LEN);
		r->kind = KIND_HEADER;
		r->tgid = me;
		bpf_seq_write(seq, r, HEAD_LEN);
	}
	if (!t) {
		// The walk's end: how many tasks it visited.
		__builtin_memset(r, 0, HEAD_LEN);
		r->kind = KIND_END;
		r->tid = ctx->meta->seq_num;
		bpf_seq_write(seq, r, HEAD_LEN);
		return 0;
	}
	if ((u32)t->tgid == me)
		return 0;
	u32 st = state_index(t);
	if (st > 31 || !(state_mask & (1u << st)))
		return 0;
	r->kind = KIND_TASK;
	r->tgid = t->tgid;
	r->tid = t->pid;
	r->state = st;
	r->flags = t->flags;
	r->syscall = -1;
	if (st != 0) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
		if (regs)
			r->syscall = (s64)(long)BPF_CORE_READ(regs, orig_ax);
	}
	r->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&r->comm, t, comm);
	long n = 0;
	if (want_stack) {
		n = bpf_get_task_stack(t, r->stack, sizeof(r->stack), 0);
		if (n < 0)
			n = 0;
		if (n > (long)sizeof(r->stack))
			n = sizeof(r->stack);
	}
	r->stack_len = n;
	bpf_seq_write(seq, r, HEAD_LEN + n);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
