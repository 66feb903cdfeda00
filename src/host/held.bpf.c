// SPDX-License-Identifier: GPL-2.0
// `wonk deleted`'s iterators (src/host/held.rs): which open files and which file mappings of every process are on
// an inode with no link left. Only those, and a record for each process, come to user space: a process with
// thousands of descriptors costs no system call at all.
//
// `walk` (Linux 6.7+) is an `iter/task` program linked to one task (wonk's main thread), so that each read of
// the iterator runs it once; that run walks every process with the open-coded task iterator, each process's file
// table through its open-descriptor bitmap (under RCU, as the kernel's own lookups read it: no reference is
// taken per file), and its mappings with the open-coded VMA iterator, and writes records into the `recs` map,
// which user space has mapped, with counts in `totals`. Where the kernel lacks those iterators, `held_fds`
// (`iter/task_file`, 5.8+: called per open file) and `held_maps` (`iter/task_vma`, 5.12+: per mapping) write
// the same records into the iterator's output: a header naming the reading process, a record each time the walk
// reaches another task, and at the end how many objects they visited.
//
// Built by build.rs with clang -target bpf. It reads kernel structures at the offsets user space found in the
// running kernel's BTF and put in the `config` map (wonk's loader does no CO-RE relocation). The relocations are
// the maps and the kfuncs.

#include "bpf_common.h"

// The file iterators' contexts, as the kernel's BTF declares them.
struct file;
struct vm_area_struct;
struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	u32 fd __attribute__((aligned(8)));
	struct file *file;
};
struct bpf_iter__task_vma {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	struct vm_area_struct *vma;
};

// Set by the loader (src/host/held.rs): byte offsets in the running kernel's structures.
struct config {
	u32 task_tgid;   // task_struct.tgid
	u32 task_pid;    // task_struct.pid
	u32 file_inode;  // file.f_inode
	u32 inode_nlink; // inode.i_nlink
	u32 inode_mode;  // inode.i_mode (u16)
	u32 inode_ino;   // inode.i_ino (unsigned long)
	u32 inode_sb;    // inode.i_sb
	u32 sb_dev;      // super_block.s_dev (the kernel's dev_t: major << 20 | minor)
	u32 vma_start;   // vm_area_struct.vm_start
	u32 vma_end;     // vm_area_struct.vm_end
	u32 vma_file;    // vm_area_struct.vm_file
	u32 task_files;  // task_struct.files
	u32 task_mm;     // task_struct.mm
	u32 files_fdt;   // files_struct.fdt
	u32 fdt_max_fds; // fdtable.max_fds
	u32 fdt_fd;      // fdtable.fd
	u32 fdt_open;    // fdtable.open_fds
	u32 task_comm;   // task_struct.comm
	struct cgroup_offsets cg;
};

#define KIND_HEADER 1
#define KIND_TASK 2
#define KIND_FD 3
#define KIND_MAP 4
#define KIND_END 5
// The process's mappings could not be walked (its mmap lock was held): user space reads its maps instead.
#define KIND_BUSY 6

// One record of the output; src/host/held.rs reads the same layout.
struct rec {
	u32 kind;
	u32 tgid; // header: the reading process
	u32 tid;
	u32 fd;
	u64 start; // a mapping's start; at the end, the objects visited
	u64 end;   // a mapping's end
	u64 ino;
	u32 dev;
	u32 pad;
	u64 cgroup;    // a task record: the process's cgroup on the v2 hierarchy
	char comm[16]; // a task record: the process's name
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
} config SEC(".maps");

// The task the walk is in (its address), to write a record when it moves to another.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} last SEC(".maps");

// `walk`'s output (sizes and BPF_F_MMAPABLE are the loader's; these declarations only name the maps).
struct totals {
	u32 records;
	u32 dropped;
	u32 reader; // the reading process's tgid
	u32 pad;
	u64 tasks;
	u64 fds;
	u64 vmas;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct rec);
} recs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct totals);
} totals SEC(".maps");

struct bpf_iter_task_vma {
	u64 __opaque[1];
} __attribute__((aligned(8)));
struct bpf_iter_num {
	u64 __opaque[1];
} __attribute__((aligned(8)));
extern int bpf_iter_task_vma_new(struct bpf_iter_task_vma *it, struct task_struct *task, u64 addr) __ksym;
extern struct vm_area_struct *bpf_iter_task_vma_next(struct bpf_iter_task_vma *it) __ksym;
extern void bpf_iter_task_vma_destroy(struct bpf_iter_task_vma *it) __ksym;
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

static __always_inline void ids(struct task_struct *t, struct config *c, struct rec *r)
{
	r->tgid = read_u32(t, c->task_tgid);
	r->tid = read_u32(t, c->task_pid);
}

// A task record's fields: its ids, cgroup and name.
static __always_inline void task_rec(struct task_struct *t, struct config *c, struct rec *r)
{
	r->kind = KIND_TASK;
	ids(t, c, r);
	r->cgroup = task_cgroup_id(t, &c->cg);
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), (const char *)t + c->task_comm);
}

#define S_IFMT 0170000
#define S_IFREG 0100000

// The calls every object shares: the header at the first, the end record at the last (no task), a task record
// when the walk reaches another task. Returns the config, or 0 when there is no object to look at. The task's ids
// are read only for a record: the walk compares tasks by address.
static __always_inline struct config *begin(struct bpf_iter_meta *meta, struct task_struct *t, const void *obj,
					    struct rec *r)
{
	struct seq_file *seq = meta->seq;
	u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	u64 *prev = bpf_map_lookup_elem(&last, &zero);
	if (!c || !prev)
		return 0;
	if (meta->seq_num == 0) {
		r->kind = KIND_HEADER;
		r->tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_seq_write(seq, r, sizeof(*r));
		*prev = 0;
	}
	if (!t || !obj) {
		__builtin_memset(r, 0, sizeof(*r));
		r->kind = KIND_END;
		r->start = meta->seq_num;
		bpf_seq_write(seq, r, sizeof(*r));
		return 0;
	}
	if (*prev != (u64)t) {
		*prev = (u64)t;
		task_rec(t, c, r);
		bpf_seq_write(seq, r, sizeof(*r));
		__builtin_memset(r, 0, sizeof(*r));
	}
	return c;
}

// The inode of a regular file with no link left, or 0.
static __always_inline void *unlinked(const void *file, struct config *c)
{
	void *inode = (void *)read_u64(file, c->file_inode);
	if (!inode)
		return 0;
	if (read_u32(inode, c->inode_nlink) != 0)
		return 0;
	if ((read_u16(inode, c->inode_mode) & S_IFMT) != S_IFREG)
		return 0;
	return inode;
}

static __always_inline void identify(const void *inode, struct config *c, struct rec *r)
{
	r->ino = read_u64(inode, c->inode_ino);
	void *sb = (void *)read_u64(inode, c->inode_sb);
	r->dev = sb ? read_u32(sb, c->sb_dev) : 0;
}

SEC("iter/task_file")
int held_fds(struct bpf_iter__task_file *ctx)
{
	struct rec r = {};
	struct task_struct *t = ctx->task;
	struct file *f = ctx->file;
	struct config *c = begin(ctx->meta, t, f, &r);
	if (!c || !t)
		return 0;
	void *inode = unlinked(f, c);
	if (!inode)
		return 0;
	ids(t, c, &r);
	r.kind = KIND_FD;
	r.fd = ctx->fd;
	identify(inode, c, &r);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/task_vma")
int held_maps(struct bpf_iter__task_vma *ctx)
{
	struct rec r = {};
	struct task_struct *t = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	struct config *c = begin(ctx->meta, t, vma, &r);
	if (!c || !t)
		return 0;
	void *file = (void *)read_u64(vma, c->vma_file);
	if (!file)
		return 0;
	void *inode = unlinked(file, c);
	if (!inode)
		return 0;
	ids(t, c, &r);
	r.kind = KIND_MAP;
	r.start = read_u64(vma, c->vma_start);
	r.end = read_u64(vma, c->vma_end);
	identify(inode, c, &r);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

// The next free record of `recs`, or 0 (counted as dropped) when it is full.
static __always_inline struct rec *next_rec(struct totals *tot)
{
	u32 i = tot->records;
	struct rec *r = bpf_map_lookup_elem(&recs, &i);
	if (!r) {
		tot->dropped++;
		return 0;
	}
	tot->records = i + 1;
	__builtin_memset(r, 0, sizeof(*r));
	return r;
}

// The descriptors set in one word of the open-descriptor bitmap.
static __always_inline void fd_word(struct config *c, struct totals *tot, void **fd, u64 bits, u32 word, u32 tgid)
{
	struct bpf_iter_num it;
	int *b;
	bpf_iter_num_new(&it, 0, 64);
	while ((b = bpf_iter_num_next(&it))) {
		u32 bit = *b & 63;
		if (!(bits >> bit))
			break;
		if (!((bits >> bit) & 1))
			continue;
		tot->fds++;
		u32 n = word * 64 + bit;
		void *file = (void *)read_u64(fd, n * 8);
		if (!file)
			continue;
		void *inode = unlinked(file, c);
		if (!inode)
			continue;
		struct rec *r = next_rec(tot);
		if (!r)
			continue;
		r->kind = KIND_FD;
		r->tgid = tgid;
		r->tid = tgid;
		r->fd = n;
		identify(inode, c, r);
	}
	bpf_iter_num_destroy(&it);
}

SEC("iter/task")
int walk(struct bpf_iter__task *ctx)
{
	u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	struct totals *tot = bpf_map_lookup_elem(&totals, &zero);
	if (!ctx->task || !c || !tot)
		return 0;
	// The counters live in the map, not in registers: the verifier then checks each loop body once.
	__builtin_memset(tot, 0, sizeof(*tot));
	tot->reader = bpf_get_current_pid_tgid() >> 32;
	struct bpf_iter_task it;
	struct task_struct *t;
	bpf_iter_task_new(&it, 0, BPF_TASK_ITER_ALL_PROCS);
	while ((t = bpf_iter_task_next(&it))) {
		tot->tasks++;
		void *files = (void *)read_u64(t, c->task_files);
		void *mm = (void *)read_u64(t, c->task_mm);
		if (!files && !mm)
			continue;
		u32 tgid = read_u32(t, c->task_tgid);
		struct rec *r = next_rec(tot);
		if (r)
			task_rec(t, c, r);
		void *fdt = files ? (void *)read_u64(files, c->files_fdt) : 0;
		if (fdt) {
			u32 max = read_u32(fdt, c->fdt_max_fds);
			void **fd = (void **)read_u64(fdt, c->fdt_fd);
			u64 *open = (u64 *)read_u64(fdt, c->fdt_open);
			struct bpf_iter_num wi;
			int *w;
			bpf_iter_num_new(&wi, 0, (max + 63) / 64);
			while ((w = bpf_iter_num_next(&wi))) {
				u32 word = *w;
				u64 bits = read_u64(open, word * 8);
				if (bits)
					fd_word(c, tot, fd, bits, word, tgid);
			}
			bpf_iter_num_destroy(&wi);
		}
		if (!mm)
			continue;
		struct bpf_iter_task_vma vi;
		struct vm_area_struct *v;
		if (bpf_iter_task_vma_new(&vi, t, 0) != 0) {
			r = next_rec(tot);
			if (r) {
				r->kind = KIND_BUSY;
				r->tgid = tgid;
				r->tid = tgid;
			}
		}
		while ((v = bpf_iter_task_vma_next(&vi))) {
			tot->vmas++;
			void *file = (void *)read_u64(v, c->vma_file);
			if (!file)
				continue;
			void *inode = unlinked(file, c);
			if (!inode)
				continue;
			r = next_rec(tot);
			if (!r)
				continue;
			r->kind = KIND_MAP;
			r->tgid = tgid;
			r->tid = tgid;
			r->start = read_u64(v, c->vma_start);
			r->end = read_u64(v, c->vma_end);
			identify(inode, c, r);
		}
		bpf_iter_task_vma_destroy(&vi);
	}
	bpf_iter_task_destroy(&it);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
