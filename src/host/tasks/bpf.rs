//! The BPF sampler: an `iter/task` program, loaded once and linked; each round opens a new iterator on the link
//! and reads it. Where the kernel has the open-coded task iterator (Linux 6.7+), `task_walk.bpf.c` runs once a
//! round and walks every task itself, writing records into maps wonk has mapped; elsewhere `task_each.bpf.c` runs
//! once per task and writes its records into the iterator's output. Either way only the tasks in the states
//! asked for come to user space, so a round costs about one walk of the kernel's task list.
//!
//! The loader is wonk's own and small, for these two programs: the kernel's BTF is read once to find the
//! iterator's attach point, the kfuncs' ids and the offsets of the few fields the programs read (they get them in
//! their `config` map instead of being relocated), the maps are created and their references (and the kfunc
//! calls) patched into the code, and the program is loaded as a tracing program. User space adds kernel stacks symbolised from `/proc/kallsyms` (read once), and
//! cgroup ids turned into cgroup v2 paths with `open_by_handle_at` on the cgroup2 mount (the id is the kernfs
//! node id, which a `FILEID_KERNFS` handle carries), cached.

use super::{state_mask, Thread, Want, STATE_LETTERS};
use crate::host::{mountinfo, procfs, read_bounded, Host};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
/// Distinct cgroup ids remembered before the cache starts again.
const CGROUP_CACHE: usize = 16_384;

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
    cgroup2: Option<(File, String)>,
    cgroups: HashMap<u64, Option<String>>,
    pub(super) seen: u64,
}

impl BpfSampler {
    /// Loads and links the program, reads kallsyms when stacks are wanted, and runs one walk to check that the
    /// iterator's pids are the ones wonk's /proc shows. The error is the reason, for `--source auto` to show.
    pub(super) fn open(host: &Host, states: &[char], want: Want) -> Result<BpfSampler, String> {
        const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
        let data = match Mapped::read(VMLINUX) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "the kernel has no BTF ({VMLINUX} is missing: CONFIG_DEBUG_INFO_BTF)"
                ))
            }
            Err(e) => return Err(format!("{VMLINUX}: {e}")),
        };
        let btf = Btf::parse(data.bytes()).map_err(|e| format!("{VMLINUX}: {e}"))?;
        let attach = btf.func("bpf_iter_task").ok_or(
            "the kernel has no BPF task iterator (no bpf_iter_task in its BTF; Linux 5.8 or later)",
        )?;
        let field = |s: &str, f: &str| {
            btf.member_offset(s, f)
                .ok_or_else(|| format!("the kernel's BTF has no {s}.{f}"))
        };
        let regs_syscall = if cfg!(target_arch = "x86_64") {
            btf.member_offset("pt_regs", "orig_ax")
        } else {
            None
        };
        let kfuncs = [
            "bpf_iter_task_new",
            "bpf_iter_task_next",
            "bpf_iter_task_destroy",
        ]
        .map(|f| btf.func(f));
        let config: [u32; 13] = [
            state_mask(states),
            u32::from(want.kstack || want.wchan),
            field("task_struct", "__state")?,
            field("task_struct", "flags")?,
            field("task_struct", "exit_state")?,
            field("task_struct", "pid")?,
            field("task_struct", "tgid")?,
            field("task_struct", "comm")?,
            field("task_struct", "cgroups")?,
            field("css_set", "dfl_cgrp")?,
            field("cgroup", "kn")?,
            field("kernfs_node", "id")?,
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
            cgroup2: cgroup2_mount(host),
            cgroups: HashMap::new(),
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
        if let Some(p) = self.cgroups.get(&id) {
            return p.clone();
        }
        let p = self
            .cgroup2
            .as_ref()
            .and_then(|(mount, at)| cgroup_by_id(mount, at, id));
        if self.cgroups.len() >= CGROUP_CACHE {
            self.cgroups.clear();
        }
        self.cgroups.insert(id, p.clone());
        p
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

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_MMAPABLE: u32 = 1 << 10;

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
    let map = |value: usize, entries: u32, name: &str| {
        let fd = map_create(
            BPF_MAP_TYPE_ARRAY,
            value as u32,
            entries,
            BPF_F_MMAPABLE,
            name,
        )
        .map_err(|e| denied("creating the task walk's maps", e))?;
        let m = Mapped::map(&fd, value * entries as usize)
            .map_err(|e| format!("mapping the task walk's {name} map: {e}"))?;
        Ok::<_, String>((fd, m))
    };
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
    let mut insns = program(WALK, &maps, &kfuncs)?;
    let prog = prog_load(&mut insns, attach_btf_id)?;
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

fn config_map(config: &[u32; 13]) -> Result<OwnedFd, String> {
    let cfg = map_create(
        BPF_MAP_TYPE_ARRAY,
        std::mem::size_of_val(config) as u32,
        1,
        0,
        "wonk_cfg",
    )
    .map_err(|e| denied("creating the task iterator's config map", e))?;
    map_update(&cfg, config).map_err(|e| format!("filling the task iterator's config map: {e}"))?;
    Ok(cfg)
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
    let mut insns = program(EACH, &[("config", &cfg), ("scratch", &scratch)], &[])?;
    let prog = prog_load(&mut insns, attach_btf_id)?;
    let link = link_create(&prog, None).map_err(|e| format!("linking the task iterator: {e}"))?;
    Ok((link, Mode::Each))
}

fn denied(what: &str, e: io::Error) -> String {
    if e.raw_os_error() == Some(libc::EPERM) {
        format!("{what}: {e} (the BPF sampler needs CAP_BPF and CAP_PERFMON, or root)")
    } else {
        format!("{what}: {e}")
    }
}

/// The program's instructions from an object build.rs made, with each map reference (a 64-bit immediate load
/// relocated against a map's symbol) turned into that map's descriptor, and each kfunc call into a call of that
/// kernel function by its BTF id.
fn program(
    object: &[u8],
    maps: &[(&str, &OwnedFd)],
    kfuncs: &[(&str, u32)],
) -> Result<Vec<[u8; 8]>, String> {
    let elf =
        Elf::parse(object).ok_or("the task iterator's object is not the ELF build.rs makes")?;
    let code = elf
        .section("iter/task")
        .ok_or("the task iterator's object has no iter/task section")?;
    let mut insns: Vec<[u8; 8]> = code
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    for (offset, symbol) in elf.relocations(".reliter/task") {
        if let Some((_, id)) = kfuncs.iter().find(|(name, _)| *name == symbol) {
            let i = (offset / 8) as usize;
            if insns.get(i).map(|x| x[0]) != Some(0x85) {
                return Err(format!(
                    "the task iterator's relocation at {offset} is not a call"
                ));
            }
            // src_reg = BPF_PSEUDO_KFUNC_CALL; imm = the function's BTF id; off 0: in vmlinux.
            insns[i][1] = (insns[i][1] & 0x0f) | (2 << 4);
            insns[i][2..4].copy_from_slice(&0u16.to_ne_bytes());
            insns[i][4..8].copy_from_slice(&id.to_ne_bytes());
            continue;
        }
        let fd = maps
            .iter()
            .find(|(name, _)| *name == symbol)
            .map(|(_, fd)| fd.as_raw_fd())
            .ok_or_else(|| format!("the task iterator refers to an unknown symbol {symbol}"))?;
        let i = (offset / 8) as usize;
        if i + 1 >= insns.len() || insns[i][0] != 0x18 {
            return Err(format!(
                "the task iterator's relocation at {offset} is not a 64-bit load"
            ));
        }
        // src_reg = BPF_PSEUDO_MAP_FD; imm = the descriptor; the second half's imm stays 0.
        insns[i][1] = (insns[i][1] & 0x0f) | (1 << 4);
        insns[i][4..8].copy_from_slice(&fd.to_ne_bytes());
        insns[i + 1][4..8].copy_from_slice(&0u32.to_ne_bytes());
    }
    Ok(insns)
}

/// `union bpf_attr` as the commands used here fill it (144 bytes, the rest zero).
type Attr = [u32; 36];

fn ptr(attr: &mut Attr, at: usize, p: u64) {
    attr[at / 4] = p as u32;
    attr[at / 4 + 1] = (p >> 32) as u32;
}

fn name(attr: &mut Attr, at: usize, name: &str) {
    for (i, chunk) in name.as_bytes()[..name.len().min(15)].chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        attr[at / 4 + i] = u32::from_ne_bytes(w);
    }
}

fn map_create(
    map_type: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    map_name: &str,
) -> io::Result<OwnedFd> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    let mut attr: Attr = [0; 36];
    attr[0] = map_type;
    attr[1] = 4; // key_size
    attr[2] = value_size;
    attr[3] = max_entries;
    attr[4] = flags;
    name(&mut attr, 28, map_name);
    bpf(BPF_MAP_CREATE, &mut attr).map(|fd| fd.expect("a map descriptor"))
}

fn map_update(map: &OwnedFd, value: &[u32; 13]) -> io::Result<()> {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    let key = 0u32;
    let mut attr: Attr = [0; 36];
    attr[0] = map.as_raw_fd() as u32;
    ptr(&mut attr, 8, &key as *const u32 as u64);
    ptr(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// `bpf(BPF_PROG_LOAD)` as a tracing program attached to the task iterator; on refusal, loads again with the
/// verifier's log and keeps its last lines for the message.
fn prog_load(insns: &mut [[u8; 8]], attach_btf_id: u32) -> Result<OwnedFd, String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_ITER: u32 = 28;
    let license = b"GPL\0";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr: Attr = [0; 36];
        attr[0] = BPF_PROG_TYPE_TRACING;
        attr[1] = insns.len() as u32;
        ptr(&mut attr, 8, insns.as_ptr() as u64);
        ptr(&mut attr, 16, license.as_ptr() as u64);
        if let Some(log) = log {
            attr[6] = 1; // log_level
            attr[7] = log.len() as u32;
            ptr(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        name(&mut attr, 48, "wonk_tasks");
        attr[68 / 4] = BPF_TRACE_ITER; // expected_attach_type
        attr[108 / 4] = attach_btf_id;
        bpf(BPF_PROG_LOAD, &mut attr).map(|fd| fd.expect("a program descriptor"))
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err(denied("loading the task iterator", e))
        }
        Err(e) => {
            let mut log = vec![0u8; 1 << 20];
            let _ = attempt(Some(&mut log));
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
                    .into_owned();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "the kernel refused the task iterator: {e}; verifier: {}",
                tail.join(" / ")
            ))
        }
    }
}

/// `bpf(BPF_LINK_CREATE)` for an iterator program over every task, or over the one thread `tid`.
fn link_create(prog: &OwnedFd, tid: Option<u32>) -> io::Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_TRACE_ITER: u32 = 28;
    // union bpf_iter_link_info: task.tid first.
    let info: [u32; 4] = [tid.unwrap_or(0), 0, 0, 0];
    let mut attr: Attr = [0; 36];
    attr[0] = prog.as_raw_fd() as u32; // link_create.prog_fd
    attr[2] = BPF_TRACE_ITER; // link_create.attach_type
    if tid.is_some() {
        ptr(&mut attr, 16, info.as_ptr() as u64); // link_create.iter_info
        attr[6] = std::mem::size_of_val(&info) as u32; // link_create.iter_info_len
    }
    bpf(BPF_LINK_CREATE, &mut attr).map(|fd| fd.expect("a link descriptor"))
}

/// `bpf(BPF_ITER_CREATE)`: a new walk of the linked iterator, read like a file.
fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
    const BPF_ITER_CREATE: libc::c_long = 33;
    let mut attr: Attr = [0; 36];
    attr[0] = link.as_raw_fd() as u32; // iter_create.link_fd
    bpf(BPF_ITER_CREATE, &mut attr).map(|fd| fd.expect("an iterator descriptor"))
}

/// The bpf(2) system call; `Some(descriptor)` for the commands that return one.
fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<Option<OwnedFd>> {
    // SAFETY: attr is a zeroed `union bpf_attr` with the command's fields set; every pointer in it points to
    // memory that outlives the call (the kernel reads the instructions, license, key and value, and writes at
    // most log_size bytes of log).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    if cmd == BPF_MAP_UPDATE_ELEM {
        return Ok(None);
    }
    // SAFETY: the other commands return a new file descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

/// Memory mapped for the sampler, unmapped on drop: a file read into an anonymous mapping of its own (the
/// kernel's BTF, megabytes needed for a moment at load, goes back to the kernel rather than staying in the
/// allocator of a long-running agent), or a BPF map's values.
struct Mapped {
    ptr: *mut libc::c_void,
    cap: usize,
    len: usize,
}

impl Mapped {
    fn read(path: &str) -> io::Result<Mapped> {
        let mut f = File::open(path)?;
        let cap = (f.metadata()?.len() as usize).clamp(4096, 256 << 20);
        // SAFETY: a new private anonymous mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut m = Mapped { ptr, cap, len: 0 };
        while m.len < m.cap {
            // SAFETY: the mapping is `cap` bytes, writable, and only this function writes it.
            let rest = unsafe {
                std::slice::from_raw_parts_mut(m.ptr.cast::<u8>().add(m.len), m.cap - m.len)
            };
            match f.read(rest) {
                Ok(0) => break,
                Ok(n) => m.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(m)
    }

    /// A BPF map created with `BPF_F_MMAPABLE`, mapped read-only (its first `len` bytes).
    fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapped> {
        let cap = len.max(1).next_multiple_of(4096);
        // SAFETY: a new shared read-only mapping of the map's values; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, cap, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping were written by `read`; it lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `read`, unmapped once.
        unsafe { libc::munmap(self.ptr, self.cap) };
    }
}

/// The little of a relocatable ELF64 object the loader reads: sections by name, and a section's relocations as
/// (offset, symbol name).
struct Elf<'a> {
    data: &'a [u8],
    /// (name, offset, size, link) of each section.
    sections: Vec<(&'a [u8], usize, usize, usize)>,
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Option<Elf<'a>> {
        if data.get(..4)? != b"\x7fELF" || *data.get(4)? != 2 {
            return None;
        }
        let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
        let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
        let shoff = u64_at(0x28)? as usize;
        let shentsize = usize::from(u16_at(0x3a)?);
        let shnum = usize::from(u16_at(0x3c)?);
        let shstrndx = usize::from(u16_at(0x3e)?);
        let header = |i: usize| {
            let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
            Some((
                u32_at(h)? as usize,
                u64_at(h + 0x18)? as usize,
                u64_at(h + 0x20)? as usize,
                u32_at(h + 0x28)? as usize,
            ))
        };
        let (_, stroff, strsize, _) = header(shstrndx)?;
        let names = data.get(stroff..stroff.checked_add(strsize)?)?;
        let mut sections = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let (n, off, size, link) = header(i)?;
            sections.push((cstr(names, n)?, off, size, link));
        }
        Some(Elf { data, sections })
    }

    fn section(&self, name: &str) -> Option<&'a [u8]> {
        let (_, off, size, _) = self.sections.iter().find(|s| s.0 == name.as_bytes())?;
        self.data.get(*off..off.checked_add(*size)?)
    }

    fn relocations(&self, name: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let Some(&(_, off, size, symtab)) = self.sections.iter().find(|s| s.0 == name.as_bytes())
        else {
            return out;
        };
        let Some(&(_, sym_off, sym_size, strtab)) = self.sections.get(symtab) else {
            return out;
        };
        let Some(&(_, str_off, str_size, _)) = self.sections.get(strtab) else {
            return out;
        };
        let (Some(rels), Some(syms), Some(strs)) = (
            self.data.get(off..off + size),
            self.data.get(sym_off..sym_off + sym_size),
            self.data.get(str_off..str_off + str_size),
        ) else {
            return out;
        };
        for r in rels.chunks_exact(16) {
            let offset = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
            let info = u64::from_le_bytes(r[8..].try_into().expect("8 bytes"));
            let sym = (info >> 32) as usize * 24;
            let name = syms
                .get(sym..sym + 4)
                .and_then(|n| cstr(strs, u32::from_le_bytes(n.try_into().ok()?) as usize));
            if let Some(name) = name {
                out.push((offset, String::from_utf8_lossy(name).into_owned()));
            }
        }
        out
    }
}

/// The NUL-terminated string at `at` in a string table.
fn cstr(table: &[u8], at: usize) -> Option<&[u8]> {
    let s = table.get(at..)?;
    Some(&s[..s.iter().position(|&b| b == 0)?])
}

/// The kernel's BTF, indexed enough to find a function's type id and a struct member's byte offset.
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Each type's offset in `types`, by type id (id 0 is void).
    at: Vec<u32>,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Btf<'a>, String> {
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        };
        if data.get(..2) != Some(&0xeb9fu16.to_ne_bytes()[..]) {
            return Err("not BTF (bad magic)".into());
        }
        let bad = || "truncated BTF header".to_string();
        let hdr = u32_at(4).ok_or_else(bad)? as usize;
        let (toff, tlen) = (
            u32_at(8).ok_or_else(bad)? as usize,
            u32_at(12).ok_or_else(bad)? as usize,
        );
        let (soff, slen) = (
            u32_at(16).ok_or_else(bad)? as usize,
            u32_at(20).ok_or_else(bad)? as usize,
        );
        let types = data
            .get(hdr + toff..hdr + toff + tlen)
            .ok_or("BTF type section out of bounds")?;
        let strings = data
            .get(hdr + soff..hdr + soff + slen)
            .ok_or("BTF string section out of bounds")?;
        let mut at = vec![0u32];
        let mut off = 0usize;
        while off + 12 <= types.len() {
            at.push(off as u32);
            let info = u32::from_ne_bytes(types[off + 4..off + 8].try_into().expect("4 bytes"));
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                2 | 7..=12 | 16 | 18 => 0,
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                k => return Err(format!("BTF type {} has an unknown kind {k}", at.len() - 1)),
            };
            off += 12 + extra;
        }
        Ok(Btf { types, strings, at })
    }

    fn word(&self, off: usize) -> u32 {
        self.types
            .get(off..off + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    }

    fn name(&self, off: usize) -> &[u8] {
        cstr(self.strings, self.word(off) as usize).unwrap_or(b"")
    }

    fn kind(&self, off: usize) -> u32 {
        (self.word(off + 4) >> 24) & 0x1f
    }

    /// The id of the function `name`.
    fn func(&self, name: &str) -> Option<u32> {
        (1..self.at.len())
            .find(|&id| {
                let off = self.at[id] as usize;
                self.kind(off) == 12 && self.name(off) == name.as_bytes()
            })
            .map(|id| id as u32)
    }

    /// The byte offset of `member` in `struct name` (looking into anonymous structs and unions).
    fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let off = self.at.iter().skip(1).map(|&o| o as usize).find(|&o| {
            self.kind(o) == 4 && self.word(o + 4) & 0xffff > 0 && self.name(o) == name.as_bytes()
        })?;
        self.find_member(off, member.as_bytes(), 0)
            .map(|bits| bits / 8)
    }

    fn find_member(&self, off: usize, member: &[u8], depth: u32) -> Option<u32> {
        let info = self.word(off + 4);
        let bitfields = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = off + 12 + 12 * i;
            let raw = self.word(m + 8);
            let bits = if bitfields { raw & 0xff_ffff } else { raw };
            let name = self.name(m);
            if name == member {
                return Some(bits);
            }
            if name.is_empty() && depth < 8 {
                let inner = self.resolve(self.word(m + 4))?;
                if matches!(self.kind(inner), 4 | 5) {
                    if let Some(b) = self.find_member(inner, member, depth + 1) {
                        return Some(bits + b);
                    }
                }
            }
        }
        None
    }

    /// A type's offset after typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<usize> {
        for _ in 0..16 {
            let off = *self.at.get(id as usize)? as usize;
            match self.kind(off) {
                8..=11 | 18 => id = self.word(off + 8),
                _ => return Some(off),
            }
        }
        None
    }
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

/// The host's cgroup2 mount (its root, not a subtree), opened, and the path wonk sees it at.
fn cgroup2_mount(host: &Host) -> Option<(File, String)> {
    let data = procfs::mountinfo(host, 1).ok()?;
    let m = mountinfo::parse(&data)
        .0
        .into_iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == b"/")?;
    let at = host.path(std::str::from_utf8(&m.mount_point).ok()?);
    let dir = crate::host::open_dir_at(host.root_dir(), &at).ok()?;
    Some((File::from(dir), at.to_string_lossy().into_owned()))
}

/// open_by_handle_at with a `FILEID_KERNFS` handle (the cgroup id), then the path the kernel gives the
/// descriptor, relative to the mount.
fn cgroup_by_id(mount: &File, at: &str, id: u64) -> Option<String> {
    const FILEID_KERNFS: i32 = 0xfe;
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    handle[4..8].copy_from_slice(&FILEID_KERNFS.to_ne_bytes());
    handle[8..16].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: the handle buffer is a valid struct file_handle with 8 bytes of f_handle; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            handle.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let seen = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let seen = seen.to_str()?;
    let rest = seen.strip_prefix(at.trim_end_matches('/'))?;
    Some(if rest.is_empty() {
        "/".into()
    } else {
        rest.into()
    })
}
