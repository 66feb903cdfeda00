// SPDX-License-Identifier: GPL-2.0
// What wonk's BPF programs share (src/host/tasks/*.bpf.c, src/host/held.bpf.c): the types, the iterators'
// metadata, reads of kernel memory at the offsets the loader (src/host/bpf.rs) found in the running kernel's BTF,
// and the open-coded task iterator's kfuncs (Linux 6.7+; a program that calls them is loaded only there).

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;

// As the kernel's BTF declares it (stable: it is the iterators' ABI).
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

static __always_inline u64 read_u64(const void *base, u32 off)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u32 read_u32(const void *base, u32 off)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u16 read_u16(const void *base, u32 off)
{
	u16 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

// The offsets a task's cgroup id is read through, part of each program's `config`.
struct cgroup_offsets {
	u32 task_cgroups;     // task_struct.cgroups (struct css_set *)
	u32 css_set_dfl_cgrp; // css_set.dfl_cgrp (struct cgroup *)
	u32 cgroup_kn;        // cgroup.kn (struct kernfs_node *)
	u32 kernfs_node_id;   // kernfs_node.id (u64)
};

// A task's cgroup id on the v2 hierarchy (the kernfs node id of task->cgroups->dfl_cgrp), 0 if none.
static __always_inline u64 task_cgroup_id(const void *t, const struct cgroup_offsets *o)
{
	void *css = (void *)read_u64(t, o->task_cgroups);
	void *cgrp = css ? (void *)read_u64(css, o->css_set_dfl_cgrp) : 0;
	void *kn = cgrp ? (void *)read_u64(cgrp, o->cgroup_kn) : 0;
	return kn ? read_u64(kn, o->kernfs_node_id) : 0;
}

struct bpf_iter_task {
	u64 __opaque[3];
} __attribute__((aligned(8)));
#define BPF_TASK_ITER_ALL_PROCS 0
#define BPF_TASK_ITER_ALL_THREADS 1
extern int bpf_iter_task_new(struct bpf_iter_task *it, struct task_struct *task, unsigned int flags) __ksym;
extern struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it) __ksym;
extern void bpf_iter_task_destroy(struct bpf_iter_task *it) __ksym;
