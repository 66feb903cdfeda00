//! The BPF sampler: `task.bpf.c`, an `iter/task` program, loaded once (aya: ELF, CO-RE relocations against the
//! kernel's BTF, the verifier) and linked; each round opens a new iterator on the link and reads it to the end.
//! The kernel walks every task and writes a record only for those in the states asked for, so a round costs
//! about one read of a few records however many threads the node has.
//!
//! What user space adds: kernel stacks symbolised from `/proc/kallsyms` (read once), and cgroup ids turned into
//! cgroup v2 paths with `open_by_handle_at` on the cgroup2 mount (the id is the kernfs node id, which a
//! `FILEID_KERNFS` handle carries), cached.

use super::{state_mask, Thread, Want, STATE_LETTERS};
use crate::host::{mountinfo, procfs, read_bounded, Host};
use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/task.bpf.o"));

/// `struct rec` in task.bpf.c: the fixed part, then `stack_len` bytes of return addresses.
const HEAD_LEN: usize = 56;
const KIND_HEADER: u32 = 1;
const KIND_TASK: u32 = 2;
const KIND_END: u32 = 3;
/// Distinct cgroup ids remembered before the cache starts again.
const CGROUP_CACHE: usize = 16_384;

pub(super) struct BpfSampler {
    /// Owns the loaded program and its maps.
    _ebpf: Ebpf,
    link: OwnedFd,
    want: Want,
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
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing: CONFIG_DEBUG_INFO_BTF)"
                    .into(),
            );
        }
        let btf =
            Btf::from_sys_fs().map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
        let mask = state_mask(states);
        let stack = u32::from(want.kstack || want.wchan);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("state_mask", &mask, true)
            .override_global("want_stack", &stack, true)
            .load(OBJECT)
            .map_err(|e| format!("loading the task iterator: {}", chain(&e)))?;
        let prog: &mut Iter = ebpf
            .program_mut("sample")
            .ok_or("the task iterator's object has no program `sample`")?
            .try_into()
            .map_err(|e| format!("the task iterator's program: {e}"))?;
        prog.load("task", &btf).map_err(|e| {
            let e = chain(&e);
            if e.contains("bpf_iter_task") {
                format!("the kernel has no BPF task iterator (Linux 5.8 or later): {e}")
            } else if e.contains("EPERM") || e.contains("Operation not permitted") {
                format!("the kernel refused to load the task iterator (needs CAP_BPF and CAP_PERFMON, or root): {e}")
            } else {
                format!("the kernel refused the task iterator: {e}")
            }
        })?;
        let prog_fd = prog
            .fd()
            .map_err(|e| format!("the task iterator's program: {e}"))?
            .as_fd()
            .as_raw_fd();
        let link = link_create(prog_fd).map_err(|e| format!("linking the task iterator: {e}"))?;
        let syms = if stack != 0 {
            Some(Kallsyms::read(host)?)
        } else {
            None
        };
        let mut s = BpfSampler {
            _ebpf: ebpf,
            link,
            want,
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
                syscall: self.want.syscall.then(|| {
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

/// An error and its sources, on one line (aya's errors keep the verifier's reason in their sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
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

/// `bpf(BPF_LINK_CREATE)` for an iterator program over every task.
fn link_create(prog_fd: i32) -> io::Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_TRACE_ITER: u32 = 28;
    let mut attr = [0u32; 32];
    attr[0] = prog_fd as u32; // link_create.prog_fd
    attr[2] = BPF_TRACE_ITER; // link_create.attach_type
    bpf(BPF_LINK_CREATE, &mut attr)
}

/// `bpf(BPF_ITER_CREATE)`: a new walk of the linked iterator, read like a file.
fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
    const BPF_ITER_CREATE: libc::c_long = 33;
    let mut attr = [0u32; 32];
    attr[0] = link.as_raw_fd() as u32; // iter_create.link_fd
    bpf(BPF_ITER_CREATE, &mut attr)
}

fn bpf(cmd: libc::c_long, attr: &mut [u32; 32]) -> io::Result<OwnedFd> {
    // SAFETY: attr is a zeroed `union bpf_attr` (128 bytes) with the command's fields set; the kernel reads at
    // most the size passed.
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
    // SAFETY: both commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
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
