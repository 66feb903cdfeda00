//! The BPF sampler: an `iter/task` program, loaded once and linked; each round opens a new iterator on the link
//! and reads it. Where the kernel has the open-coded task iterator (Linux 6.7+), `task_walk.bpf.c` runs once a
//! round and walks every task itself, writing records into maps wonk has mapped; elsewhere `task_each.bpf.c` runs
//! once per task and writes its records into the iterator's output. Either way only the tasks in the states
//! asked for come to user space, so a round costs about one walk of the kernel's task list.
//!
//! wonk's own loader (`host::bpf`) finds the iterator's attach point, the kfuncs' ids and the offsets of the few
//! fields the programs read in the kernel's BTF. User space adds kernel stacks symbolised from `/proc/kallsyms`
//! (read once), and cgroup ids turned into cgroup v2 paths with `open_by_handle_at` on the cgroup2 mount (the id
//! is the kernfs node id, which a `FILEID_KERNFS` handle carries), cached.

use super::{state_mask, Thread, Want, STATE_LETTERS};
use crate::host::bpf::{
    config_map, denied, iter_create, link_create, map_create, output_map, prog_load, program,
    vmlinux, Btf, CgroupPaths, Mapped,
};
use crate::host::{read_bounded, Host};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

static WALK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/task_walk.bpf.o"));
static EACH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/task_each.bpf.o"));

/// `struct rec` in task_each.bpf.c: the fixed part, then `stack_len` bytes of return addresses; task_walk.bpf.c's
/// `struct head` is the same fixed part.
const HEAD_LEN: usize = 56;
/// task_walk.bpf.c's `struct stack`.
const STACK_LEN: usize = 512;
/// Records a walk has room for (in maps of HEAD_LEN, and STACK_LEN when stacks are wanted, per record).
const RECORDS: u32 = 16_384;
const RECORDS_WITH_STACKS: u32 = 4_096;
const KIND_HEADER: u32 = 1;
const KIND_TASK: u32 = 2;
const KIND_END: u32 = 3;

pub(super) struct BpfSampler {
    link: OwnedFd,
    mode: Mode,
    /// Records a walk had no room for, over the run.
    pub(super) dropped: u64,
    want: Want,
    /// Whether the kernel's `pt_regs` has a field the program reads the syscall number from.
    syscall_known: bool,
    buf: Vec<u8>,
    syms: Option<Kallsyms>,
    cgroups: CgroupPaths,
    pub(super) seen: u64,
}

impl BpfSampler {
    /// Loads and links the program, reads kallsyms when stacks are wanted, and runs one walk to check that the
    /// iterator's pids are the ones wonk's /proc shows. The error is the reason, for `--source auto` to show.
    pub(super) fn open(host: &Host, states: &[char], want: Want) -> Result<BpfSampler, String> {
        let data = vmlinux()?;
        let btf =
            Btf::parse(data.bytes()).map_err(|e| format!("{}: {e}", crate::host::bpf::VMLINUX))?;
        let [attach, new, next, destroy] = btf.funcs([
            "bpf_iter_task",
            "bpf_iter_task_new",
            "bpf_iter_task_next",
            "bpf_iter_task_destroy",
        ]);
        let attach = attach.ok_or(
            "the kernel has no BPF task iterator (no bpf_iter_task in its BTF; Linux 5.8 or later)",
        )?;
        let kfuncs = [new, next, destroy];
        let regs_syscall = if cfg!(target_arch = "x86_64") {
            btf.member_offset("pt_regs", "orig_ax")
        } else {
            None
        };
        let [state, flags, exit_state, pid, tgid, comm, cgroups, dfl_cgrp, kn, id] =
            btf.members([
                ("task_struct", "__state"),
                ("task_struct", "flags"),
                ("task_struct", "exit_state"),
                ("task_struct", "pid"),
                ("task_struct", "tgid"),
                ("task_struct", "comm"),
                ("task_struct", "cgroups"),
                ("css_set", "dfl_cgrp"),
                ("cgroup", "kn"),
                ("kernfs_node", "id"),
            ])?;
        let config: [u32; 13] = [
            state_mask(states),
            u32::from(want.kstack || want.wchan),
            state,
            flags,
            exit_state,
            pid,
            tgid,
            comm,
            cgroups,
            dfl_cgrp,
            kn,
            id,
            regs_syscall.unwrap_or(u32::MAX),
        ];
        drop(btf);
        drop(data);
        // WONK_BPF_PER_TASK=1 runs the per-task program where the walk would run (the tests compare both).
        let (link, mode) = match kfuncs {
            [Some(new), Some(next), Some(destroy)]
                if std::env::var_os("WONK_BPF_PER_TASK").is_none() =>
            {
                let stacks = want.kstack || want.wchan;
                load_walk(&config, attach, [new, next, destroy], stacks).or_else(|walk| {
                    load_each(&config, attach)
                        .map_err(|e| format!("{e} (and the open-coded task walk: {walk})"))
                })?
            }
            _ => load_each(&config, attach)?,
        };
        let syms = if want.kstack || want.wchan {
            Some(Kallsyms::read(host)?)
        } else {
            None
        };
        let mut s = BpfSampler {
            link,
            mode,
            dropped: 0,
            want,
            syscall_known: regs_syscall.is_some(),
            buf: Vec::with_capacity(64 << 10),
            syms,
            cgroups: CgroupPaths::open(host),
            seen: 0,
        };
        let reader = s
            .walk()
            .map_err(|e| format!("reading the task iterator: {e}"))?;
        if reader != std::process::id() {
            return Err(format!(
                "wonk runs in a pid namespace of its own (the kernel knows it as pid {reader}, /proc as {}); the \
                 iterator's pids would not match /proc",
                std::process::id()
            ));
        }
        Ok(s)
    }

    /// Reads one walk into `buf`; returns the reading process's pid as the kernel's initial namespace sees it.
    fn walk(&mut self) -> io::Result<u32> {
        let fd = iter_create(&self.link)?;
        let mut f = File::from(fd);
        self.buf.clear();
        f.read_to_end(&mut self.buf)?;
        if let Mode::Walk {
            heads,
            stacks,
            totals,
        } = &self.mode
        {
            // The records are in the mapped maps; they are laid out here as the per-task program writes them.
            let t = totals.bytes();
            let word =
                |i: usize| u32::from_ne_bytes(t[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            let (records, visited, dropped, reader) = (word(0), word(1), word(2), word(3));
            self.seen = self.seen.max(u64::from(visited));
            self.dropped += u64::from(dropped);
            self.buf.clear();
            let heads = heads.bytes();
            for i in 0..records as usize {
                let Some(h) = heads.get(i * HEAD_LEN..(i + 1) * HEAD_LEN) else {
                    break;
                };
                let len = (u32::from_ne_bytes(h[20..24].try_into().expect("4 bytes")) as usize
                    & !7)
                    .min(STACK_LEN);
                let stack = stacks
                    .as_ref()
                    .and_then(|s| s.bytes().get(i * STACK_LEN..i * STACK_LEN + len));
                self.buf.extend_from_slice(&h[..20]);
                self.buf
                    .extend_from_slice(&(stack.map_or(0, <[u8]>::len) as u32).to_ne_bytes());
                self.buf.extend_from_slice(&h[24..]);
                self.buf.extend_from_slice(stack.unwrap_or_default());
            }
            return Ok(reader);
        }
        let mut reader = 0;
        let mut off = 0;
        while let Some(r) = Record::at(&self.buf, off) {
            match r.kind {
                KIND_HEADER => reader = r.tgid,
                KIND_END => self.seen = self.seen.max(u64::from(r.tid)),
                _ => {}
            }
            off += HEAD_LEN + r.stack_len;
        }
        Ok(reader)
    }

    pub(super) fn round(&mut self, out: &mut Vec<Thread>) -> io::Result<()> {
        self.walk()?;
        let mut off = 0;
        while let Some(r) = Record::at(&self.buf, off) {
            off += HEAD_LEN + r.stack_len;
            if r.kind != KIND_TASK {
                continue;
            }
            let state = STATE_LETTERS.get(r.state as usize).copied().unwrap_or('?');
            let frames = self.syms.as_ref().map(|k| {
                r.stack(&self.buf)
                    .filter(|&ip| ip != 0)
                    .map(|ip| k.name(ip).to_string())
                    .collect::<Vec<_>>()
            });
            out.push(Thread {
                pid: r.tgid,
                tid: r.tid,
                comm: String::from_utf8_lossy(r.comm).into_owned(),
                state,
                syscall: (self.want.syscall && self.syscall_known).then(|| {
                    if state == 'R' {
                        "running".to_string()
                    } else {
                        r.syscall.to_string()
                    }
                }),
                wchan: if self.want.wchan {
                    frames.as_ref().and_then(|f| f.first().cloned())
                } else {
                    None
                },
                kstack: if self.want.kstack { frames } else { None },
                cgroup_id: Some(r.cgroup_id),
            });
        }
        Ok(())
    }

    /// The cgroup v2 path of a cgroup id, relative to the cgroup2 root, cached.
    pub(super) fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.path(id)
    }
}

struct Record<'a> {
    kind: u32,
    tgid: u32,
    tid: u32,
    state: u32,
    stack_len: usize,
    syscall: i64,
    cgroup_id: u64,
    comm: &'a [u8],
    stack_at: usize,
}

impl<'a> Record<'a> {
    fn at(buf: &'a [u8], off: usize) -> Option<Record<'a>> {
        let h = buf.get(off..off + HEAD_LEN)?;
        let u32_at = |i: usize| u32::from_ne_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let stack_len = u32_at(20) as usize & !7;
        buf.get(off + HEAD_LEN..off + HEAD_LEN + stack_len)?;
        let comm = &h[40..56];
        let comm = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
        Some(Record {
            kind: u32_at(0),
            tgid: u32_at(4),
            tid: u32_at(8),
            state: u32_at(12),
            stack_len,
            syscall: u64_at(24) as i64,
            cgroup_id: u64_at(32),
            comm,
            stack_at: off + HEAD_LEN,
        })
    }

    fn stack(&self, buf: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        buf[self.stack_at..self.stack_at + self.stack_len]
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
    }
}

/// How a round's records come to user space.
enum Mode {
    /// In the iterator's output (task_each.bpf.c).
    Each,
    /// In maps wonk has mapped (task_walk.bpf.c).
    Walk {
        heads: Mapped,
        stacks: Option<Mapped>,
        totals: Mapped,
    },
}

/// task_walk.bpf.c: its maps created and mapped, the program loaded with the maps and kfuncs patched in, and
/// linked to wonk's own main thread, so that each read runs it once.
fn load_walk(
    config: &[u32; 13],
    attach_btf_id: u32,
    kfuncs: [u32; 3],
    stacks: bool,
) -> Result<(OwnedFd, Mode), String> {
    let cfg = config_map(config)?;
    let records = if stacks { RECORDS_WITH_STACKS } else { RECORDS };
    let map = |value, entries, name: &str| output_map(value, entries, name, "the task walk");
    let (heads_fd, heads) = map(HEAD_LEN, records, "wonk_heads")?;
    let (stacks_fd, stacks_map) = map(STACK_LEN, if stacks { records } else { 1 }, "wonk_stacks")?;
    let (totals_fd, totals) = map(16, 1, "wonk_totals")?;
    let maps = [
        ("config", &cfg),
        ("heads", &heads_fd),
        ("stacks", &stacks_fd),
        ("totals", &totals_fd),
    ];
    let kfuncs = [
        ("bpf_iter_task_new", kfuncs[0]),
        ("bpf_iter_task_next", kfuncs[1]),
        ("bpf_iter_task_destroy", kfuncs[2]),
    ];
    let mut insns = program(WALK, "iter/task", &maps, &kfuncs)?;
    let prog = prog_load(&mut insns, attach_btf_id, "wonk_tasks", "the task iterator")?;
    let link = link_create(&prog, Some(std::process::id()))
        .map_err(|e| format!("linking the task walk: {e}"))?;
    Ok((
        link,
        Mode::Walk {
            heads,
            stacks: stacks.then_some(stacks_map),
            totals,
        },
    ))
}

/// task_each.bpf.c: its maps created, the program loaded with the maps patched in, and linked over every task:
/// the link is what each round opens an iterator on (it keeps the program, and the program its maps).
fn load_each(config: &[u32; 13], attach_btf_id: u32) -> Result<(OwnedFd, Mode), String> {
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    let cfg = config_map(config)?;
    let scratch = map_create(
        BPF_MAP_TYPE_PERCPU_ARRAY,
        (HEAD_LEN + STACK_LEN) as u32,
        1,
        0,
        "wonk_scratch",
    )
    .map_err(|e| denied("creating the task iterator's buffer map", e))?;
    let mut insns = program(
        EACH,
        "iter/task",
        &[("config", &cfg), ("scratch", &scratch)],
        &[],
    )?;
    let prog = prog_load(&mut insns, attach_btf_id, "wonk_tasks", "the task iterator")?;
    let link = link_create(&prog, None).map_err(|e| format!("linking the task iterator: {e}"))?;
    Ok((link, Mode::Each))
}

/// The kernel's text symbols, sorted by address, read once.
struct Kallsyms {
    addrs: Vec<u64>,
    names: Vec<String>,
}

impl Kallsyms {
    fn read(host: &Host) -> Result<Kallsyms, String> {
        let path = host.path("/proc/kallsyms");
        let data =
            read_bounded(&path, 256 << 20).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut syms: Vec<(u64, String)> = Vec::with_capacity(200_000);
        for line in data.split(|&b| b == b'\n') {
            let mut w = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            let (Some(addr), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            if !matches!(kind, b"t" | b"T" | b"w" | b"W") {
                continue;
            }
            let Some(addr) = std::str::from_utf8(addr)
                .ok()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
            else {
                continue;
            };
            syms.push((addr, String::from_utf8_lossy(name).into_owned()));
        }
        if syms.iter().all(|(a, _)| *a == 0) {
            return Err(format!(
                "{} shows no addresses (kptr_restrict, or not root): kernel stacks could not be named",
                path.display()
            ));
        }
        // Several names may share an address; the kernel names it by the first in its table, which is the
        // order /proc/kallsyms lists them in.
        syms.sort_by_key(|(a, _)| *a);
        syms.dedup_by_key(|(a, _)| *a);
        let (addrs, names) = syms.into_iter().unzip();
        Ok(Kallsyms { addrs, names })
    }

    /// The function a return address is in (looked up one byte back: a call may be a function's last
    /// instruction), as /proc/TID/stack names it.
    fn name(&self, ip: u64) -> &str {
        let i = self.addrs.partition_point(|&a| a <= ip.saturating_sub(1));
        i.checked_sub(1).map_or("?", |i| &self.names[i])
    }
}
