// SPDX-License-Identifier: GPL-2.0
// wonk's task sampler (src/host/tasks/bpf.rs). An `iter/task` program linked to one task (wonk's main thread), so
// that each read of the iterator runs it once; that run walks every task in the kernel with the open-coded task
// iterator (bpf_iter_task_new/next/destroy, Linux 6.7+), under RCU and without taking a reference per task, and
// writes a record for each task whose state is in `state_mask` into the `heads` map (and its kernel stack into
// `stacks`, when asked for), which user space has mapped. `totals` says how many records there are, how many
// tasks the walk visited, how many records did not fit, and which process read the iterator.
//
// Built by build.rs with clang -target bpf. It reads kernel structures at the offsets user space found in the
// running kernel's BTF and put in the `config` map (wonk's loader does no CO-RE relocation; the verifier knows
// only the iterator's context and the kfuncs' types). The relocations are the maps and the three kfuncs.

#include "task_common.h"

// The same layout as task_each.bpf.c's `struct rec` without its stack.
struct head {
	u32 kind;      // 2: a task
	u32 tgid;
	u32 tid;
	u32 state;     // index in "RSDTtXZPI"
	u32 flags;     // task->flags
	u32 stack_len; // bytes of stack in the same index of `stacks`
	s64 syscall;   // the syscall number a sleeping task is in, -1 for none; not read for a running task
	u64 cgroup_id; // the task's cgroup on the v2 hierarchy
	char comm[16];
};

struct totals {
	u32 records;
	u32 visited;
	u32 dropped;
	u32 reader; // the reading process's tgid
};

struct stack {
	u64 ip[MAX_FRAMES];
};

// Sizes and flags (BPF_F_MMAPABLE) are the loader's; these declarations only name the maps.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct head);
} heads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct stack);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct totals);
} totals SEC(".maps");



SEC("iter/task")
int sample(struct bpf_iter__task *ctx)
{
	u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	struct totals *tot = bpf_map_lookup_elem(&totals, &zero);
	if (!ctx->task || !c || !tot)
		return 0;
	u32 me = bpf_get_current_pid_tgid() >> 32;
	// The counters live in the map, not in registers: the verifier then checks the loop body once.
	tot->records = 0;
	tot->visited = 0;
	tot->dropped = 0;
	tot->reader = me;
	struct bpf_iter_task it;
	struct task_struct *t;
	bpf_iter_task_new(&it, 0, BPF_TASK_ITER_ALL_THREADS);
	while ((t = bpf_iter_task_next(&it))) {
		tot->visited++;
		// Most tasks sleep: one read decides. exit_state matters only when __state has no reported bit (a
		// running task, or a dead one: TASK_DEAD is above TASK_REPORT).
		u32 state = read_u32(t, c->task_state);
		u32 exit_state = (state & TASK_REPORT) ? 0 : read_u32(t, c->task_exit_state);
		u32 st = state_index(state, exit_state);
		if (st > 31 || !(c->state_mask & (1u << st)))
			continue;
		u32 tgid = read_u32(t, c->task_tgid);
		// wonk's own threads, and the boot CPU's idle task (pid 0, which /proc does not list).
		if (tgid == me || tgid == 0)
			continue;
		u32 i = tot->records;
		struct head *h = bpf_map_lookup_elem(&heads, &i);
		if (!h) {
			tot->dropped++;
			continue;
		}
		tot->records = i + 1;
		h->kind = 2;
		h->tgid = tgid;
		h->tid = read_u32(t, c->task_pid);
		h->state = st;
		h->flags = read_u32(t, c->task_flags);
		h->syscall = -1;
		if (st != 0 && c->regs_syscall != ~0u) {
			void *regs = (void *)bpf_task_pt_regs(t);
			if (regs)
				h->syscall = (s64)read_u64(regs, c->regs_syscall);
		}
		h->cgroup_id = task_cgroup_id(t, &c->cg);
		bpf_probe_read_kernel_str(h->comm, sizeof(h->comm), (const char *)t + c->task_comm);
		h->stack_len = 0;
		if (c->want_stack) {
			struct stack *s = bpf_map_lookup_elem(&stacks, &i);
			if (s) {
				long got = bpf_get_task_stack(t, s->ip, sizeof(s->ip), 0);
				h->stack_len = got > 0 ? got : 0;
			}
		}
	}
	bpf_iter_task_destroy(&it);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
