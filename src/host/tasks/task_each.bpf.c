// SPDX-License-Identifier: GPL-2.0
// wonk's task sampler for kernels without the open-coded task iterator (before Linux 6.7; task_walk.bpf.c is
// the one used where it exists): an `iter/task` program over every task. Reading the iterator's file runs it once
// per task and writes one `struct rec` (plus its kernel stack, when asked for) for each task whose state is in
// `state_mask`; the first record of a walk is a header naming the reading process, the last counts the tasks.
//
// Built by build.rs with clang -target bpf. It reads kernel structures at the offsets user space found in the
// running kernel's BTF and put in the `config` map (src/host/tasks/bpf.rs; wonk's loader does no CO-RE
// relocation). The only relocations are the two maps.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;

// The iterator's context, as the kernel's BTF declares it (stable: it is the iterator's ABI).
struct seq_file;
struct task_struct;
struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
};
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

// Set by the loader (src/host/tasks/bpf.rs, `Config`): offsets in bytes, and what to report.
struct config {
	u32 state_mask; // bits of state indexes in "RSDTtXZPI"
	u32 want_stack;
	u32 task_state;      // task_struct.__state
	u32 task_flags;      // task_struct.flags
	u32 task_exit_state; // task_struct.exit_state
	u32 task_pid;        // task_struct.pid
	u32 task_tgid;       // task_struct.tgid
	u32 task_comm;       // task_struct.comm
	u32 task_cgroups;    // task_struct.cgroups (struct css_set *)
	u32 css_set_dfl_cgrp; // css_set.dfl_cgrp (struct cgroup *)
	u32 cgroup_kn;       // cgroup.kn (struct kernfs_node *)
	u32 kernfs_node_id;  // kernfs_node.id (u64)
	u32 regs_syscall;    // pt_regs.orig_ax (x86_64) or pt_regs.syscallno (arm64); ~0 when unknown
};

// include/linux/sched.h: the state bits task_state_index() looks at.
#define TASK_REPORT 0x7f
#define TASK_UNINTERRUPTIBLE 0x2
#define TASK_NOLOAD 0x400
#define TASK_IDLE (TASK_UNINTERRUPTIBLE | TASK_NOLOAD)
#define TASK_RTLOCK_WAIT 0x1000
#define TASK_FROZEN 0x8000
#define TASK_REPORT_IDLE 0x80

#define MAX_FRAMES 64
#define KIND_HEADER 1
#define KIND_TASK 2
#define KIND_END 3

struct rec {
	u32 kind;
	u32 tgid;      // header: the reading process's tgid
	u32 tid;       // end: the tasks the walk visited
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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct rec);
} scratch SEC(".maps");

static __always_inline u32 read_u32(const void *base, u32 off)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u64 read_u64(const void *base, u32 off)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

// Index of a state in "RSDTtXZPI", as /proc/PID/stat reports it (task_state_index() in include/linux/sched.h).
static __always_inline u32 state_index(u32 s, u32 exit_state)
{
	u32 r = (s | exit_state) & TASK_REPORT;
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

SEC("iter/task")
int sample(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	struct rec *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!c || !r)
		return 0;
	if (ctx->meta->seq_num == 0) {
		__builtin_memset(r, 0, HEAD_LEN);
		r->kind = KIND_HEADER;
		r->tgid = bpf_get_current_pid_tgid() >> 32;
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
	// Most tasks sleep: one read decides. exit_state matters only when __state has no reported bit (a running
	// task, or a dead one: TASK_DEAD is above TASK_REPORT).
	u32 state = read_u32(t, c->task_state);
	u32 exit_state = (state & TASK_REPORT) ? 0 : read_u32(t, c->task_exit_state);
	u32 st = state_index(state, exit_state);
	if (st > 31 || !(c->state_mask & (1u << st)))
		return 0;
	u32 tgid = read_u32(t, c->task_tgid);
	if (tgid == (u32)(bpf_get_current_pid_tgid() >> 32))
		return 0;
	r->kind = KIND_TASK;
	r->tgid = tgid;
	r->tid = read_u32(t, c->task_pid);
	r->state = st;
	r->flags = read_u32(t, c->task_flags);
	r->syscall = -1;
	if (st != 0 && c->regs_syscall != ~0u) {
		void *regs = (void *)bpf_task_pt_regs(t);
		if (regs)
			r->syscall = (s64)read_u64(regs, c->regs_syscall);
	}
	void *css = (void *)read_u64(t, c->task_cgroups);
	void *cgrp = css ? (void *)read_u64(css, c->css_set_dfl_cgrp) : 0;
	void *kn = cgrp ? (void *)read_u64(cgrp, c->cgroup_kn) : 0;
	r->cgroup_id = kn ? read_u64(kn, c->kernfs_node_id) : 0;
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), (const char *)t + c->task_comm);
	long n = 0;
	if (c->want_stack) {
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
