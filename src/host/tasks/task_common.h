// SPDX-License-Identifier: GPL-2.0
// What task_walk.bpf.c and task_each.bpf.c share beyond bpf_common.h: the `config` map the loader
// (src/host/tasks/bpf.rs) fills with the running kernel's field offsets, and /proc's state index.

#include "../bpf_common.h"

// Set by the loader (src/host/tasks/bpf.rs, the `config` array of BpfSampler::open): offsets in bytes, and what
// to report.
struct config {
	u32 state_mask; // bits of state indexes in "RSDTtXZPI"
	u32 want_stack;
	u32 task_state;      // task_struct.__state
	u32 task_flags;      // task_struct.flags
	u32 task_exit_state; // task_struct.exit_state
	u32 task_pid;        // task_struct.pid
	u32 task_tgid;       // task_struct.tgid
	u32 task_comm;       // task_struct.comm
	struct cgroup_offsets cg;
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
} config SEC(".maps");

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
