// SPDX-License-Identifier: GPL-2.0
// wonk's task sampler for kernels without the open-coded task iterator (before Linux 6.7; task_walk.bpf.c is
// the one used where it exists): an `iter/task` program over every task. Reading the iterator's file runs it once
// per task and writes one `struct rec` (plus its kernel stack, when asked for) for each task whose state is in
// `state_mask`; the first record of a walk is a header naming the reading process, the last counts the tasks.
//
// Built by build.rs with clang -target bpf. It reads kernel structures at the offsets user space found in the
// running kernel's BTF and put in the `config` map (src/host/tasks/bpf.rs; wonk's loader does no CO-RE
// relocation). The only relocations are the two maps.

#include "task_common.h"
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
	r->cgroup_id = task_cgroup_id(t, &c->cg);
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
