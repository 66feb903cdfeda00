//! wonk's own BPF loader, small and for its own iterator programs (`tasks/*.bpf.c`, `held.bpf.c`, compiled by
//! build.rs): the kernel's BTF is read to find an iterator's attach point, the kfuncs' ids and the offsets of the
//! few fields a program reads (programs get them in a `config` map instead of being relocated: no CO-RE), maps
//! are created and their references (and kfunc calls) patched into the code, and the program is loaded as a
//! tracing program of the iterator kind and linked. No libbpf, no crate.

use crate::host::{mountinfo, procfs, Host};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where the running kernel publishes its BTF.
pub(crate) const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, read into memory of its own (see [`Mapped`]), or why not.
pub(crate) fn vmlinux() -> Result<Mapped, String> {
    match Mapped::read(VMLINUX) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "the kernel has no BTF ({VMLINUX} is missing: CONFIG_DEBUG_INFO_BTF)"
        )),
        Err(e) => Err(format!("{VMLINUX}: {e}")),
    }
}

pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A one-entry array map holding a program's `config`, filled.
pub(crate) fn config_map(config: &[u32]) -> Result<OwnedFd, String> {
    let cfg = map_create(
        BPF_MAP_TYPE_ARRAY,
        std::mem::size_of_val(config) as u32,
        1,
        0,
        "wonk_cfg",
    )
    .map_err(|e| denied("creating the BPF program's config map", e))?;
    map_update(&cfg, config).map_err(|e| format!("filling the BPF program's config map: {e}"))?;
    Ok(cfg)
}

/// An array map of `entries` values of `value` bytes that user space maps read-only, for a program's output; `what`
/// names the program in errors.
pub(crate) fn output_map(
    value: usize,
    entries: u32,
    name: &str,
    what: &str,
) -> Result<(OwnedFd, Mapped), String> {
    let fd = map_create(
        BPF_MAP_TYPE_ARRAY,
        value as u32,
        entries,
        BPF_F_MMAPABLE,
        name,
    )
    .map_err(|e| denied(&format!("creating {what}'s maps"), e))?;
    let m = Mapped::map(&fd, value * entries as usize)
        .map_err(|e| format!("mapping {what}'s {name} map: {e}"))?;
    Ok((fd, m))
}

pub(crate) fn denied(what: &str, e: io::Error) -> String {
    if e.raw_os_error() == Some(libc::EPERM) {
        format!("{what}: {e} (BPF iterators need CAP_BPF and CAP_PERFMON, or root)")
    } else {
        format!("{what}: {e}")
    }
}

/// The instructions of the program in `section` (`iter/task`, `iter/task_file`, ...) of an object build.rs made,
/// with each map reference (a 64-bit immediate load relocated against a map's symbol) turned into that map's
/// descriptor, and each kfunc call into a call of that kernel function by its BTF id.
pub(crate) fn program(
    object: &[u8],
    section: &str,
    maps: &[(&str, &OwnedFd)],
    kfuncs: &[(&str, u32)],
) -> Result<Vec<[u8; 8]>, String> {
    let elf = Elf::parse(object)
        .ok_or_else(|| format!("the {section} object is not the ELF build.rs makes"))?;
    let code = elf
        .section(section)
        .ok_or_else(|| format!("the BPF object has no {section} section"))?;
    let mut insns: Vec<[u8; 8]> = code
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    for (offset, symbol) in elf.relocations(&format!(".rel{section}")) {
        if let Some((_, id)) = kfuncs.iter().find(|(name, _)| *name == symbol) {
            let i = (offset / 8) as usize;
            if insns.get(i).map(|x| x[0]) != Some(0x85) {
                return Err(format!(
                    "the {section} program's relocation at {offset} is not a call"
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
            .ok_or_else(|| format!("the {section} program refers to an unknown symbol {symbol}"))?;
        let i = (offset / 8) as usize;
        if i + 1 >= insns.len() || insns[i][0] != 0x18 {
            return Err(format!(
                "the {section} program's relocation at {offset} is not a 64-bit load"
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

pub(crate) fn map_create(
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

pub(crate) fn map_update(map: &OwnedFd, value: &[u32]) -> io::Result<()> {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    let key = 0u32;
    let mut attr: Attr = [0; 36];
    attr[0] = map.as_raw_fd() as u32;
    ptr(&mut attr, 8, &key as *const u32 as u64);
    ptr(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// `bpf(BPF_PROG_LOAD)` as a tracing program attached to the iterator whose BTF id is `attach_btf_id`, named
/// `prog_name` (at most 15 bytes kept) and, in messages, `what`; on refusal, loads again with the verifier's log
/// and keeps its last lines for the message.
pub(crate) fn prog_load(
    insns: &mut [[u8; 8]],
    attach_btf_id: u32,
    prog_name: &str,
    what: &str,
) -> Result<OwnedFd, String> {
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
        name(&mut attr, 48, prog_name);
        attr[68 / 4] = BPF_TRACE_ITER; // expected_attach_type
        attr[108 / 4] = attach_btf_id;
        bpf(BPF_PROG_LOAD, &mut attr).map(|fd| fd.expect("a program descriptor"))
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err(denied(&format!("loading {what}"), e))
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
                "the kernel refused {what}: {e}; verifier: {}",
                tail.join(" / ")
            ))
        }
    }
}

/// `bpf(BPF_LINK_CREATE)` for a task iterator program (task, task_file, task_vma) over every task, or over the
/// one thread `tid`.
pub(crate) fn link_create(prog: &OwnedFd, tid: Option<u32>) -> io::Result<OwnedFd> {
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
pub(crate) fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
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

/// Memory mapped for the loader, unmapped on drop: a file mapped, or read into an anonymous mapping of its own
/// (the kernel's BTF, megabytes needed for a moment at load, goes back to the kernel rather than staying in the
/// allocator of a long-running agent), or a BPF map's values.
pub(crate) struct Mapped {
    ptr: *mut libc::c_void,
    cap: usize,
    len: usize,
}

impl Mapped {
    /// The file at `path`: mapped where the kernel lets it be (its BTF can be, since Linux 6.16), else read into
    /// an anonymous mapping, 4 KiB a read(2) for a sysfs file.
    pub(crate) fn read(path: &str) -> io::Result<Mapped> {
        let mut f = File::open(path)?;
        let size = f.metadata()?.len() as usize;
        if size > 0 && size <= 256 << 20 {
            // SAFETY: a new private read-only mapping of the file's `size` bytes; checked for failure.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    f.as_raw_fd(),
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                return Ok(Mapped {
                    ptr,
                    cap: size,
                    len: size,
                });
            }
        }
        let cap = size.clamp(4096, 256 << 20);
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
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapped> {
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

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping are the file's, or were written by `read`; it lives as long
        // as self.
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
pub(crate) struct Elf<'a> {
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
pub(crate) struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Each type's offset in `types`, by type id (id 0 is void).
    at: Vec<u32>,
}

impl<'a> Btf<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Result<Btf<'a>, String> {
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
        // Each type takes at least 12 bytes: room for all of them at once.
        let mut at = Vec::with_capacity(types.len() / 12 + 1);
        at.push(0u32);
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

    fn kind(&self, off: usize) -> u32 {
        (self.word(off + 4) >> 24) & 0x1f
    }

    /// Whether the name at `off` (of a type or a member) is `name`, compared in place: finding the end of every
    /// name in the string table would cost more than the comparisons.
    fn name_is(&self, off: usize, name: &[u8]) -> bool {
        let at = self.word(off) as usize;
        // Most names differ in their first byte: tell them apart before comparing slices.
        self.strings.get(at) == Some(name.first().unwrap_or(&0))
            && self.strings.get(at..at + name.len()) == Some(name)
            && self.strings.get(at + name.len()) == Some(&0)
    }

    /// The types of kind `kind` named `names` (the first of each name), in one pass over the types: their ids.
    fn find<const N: usize>(
        &self,
        kind: u32,
        names: [&str; N],
        want: impl Fn(usize) -> bool,
    ) -> [Option<u32>; N] {
        let mut found = [None; N];
        let mut left = N;
        for (id, &off) in self.at.iter().enumerate().skip(1) {
            if left == 0 {
                break;
            }
            let off = off as usize;
            if self.kind(off) != kind || !want(off) {
                continue;
            }
            for (i, n) in names.iter().enumerate() {
                if found[i].is_none() && self.name_is(off, n.as_bytes()) {
                    found[i] = Some(id as u32);
                    left -= 1;
                }
            }
        }
        found
    }

    /// The ids of the functions `names`.
    pub(crate) fn funcs<const N: usize>(&self, names: [&str; N]) -> [Option<u32>; N] {
        self.find(12, names, |_| true)
    }

    /// The byte offsets of `(struct, member)` pairs (looking into anonymous structs and unions), the structs found
    /// in one pass; the error names the first pair missing.
    pub(crate) fn members<const N: usize>(
        &self,
        wanted: [(&str, &str); N],
    ) -> Result<[u32; N], String> {
        let structs = self.find(4, wanted.map(|(s, _)| s), |off| {
            self.word(off + 4) & 0xffff > 0
        });
        let mut out = [0; N];
        for (i, (s, m)) in wanted.iter().enumerate() {
            out[i] = structs[i]
                .and_then(|id| self.find_member(self.at[id as usize] as usize, m.as_bytes(), 0))
                .map(|bits| bits / 8)
                .ok_or_else(|| format!("the kernel's BTF has no {s}.{m}"))?;
        }
        Ok(out)
    }

    /// The byte offset of `member` in `struct name`.
    pub(crate) fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.members([(name, member)]).ok().map(|[o]| o)
    }

    fn find_member(&self, off: usize, member: &[u8], depth: u32) -> Option<u32> {
        let info = self.word(off + 4);
        let bitfields = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = off + 12 + 12 * i;
            let raw = self.word(m + 8);
            let bits = if bitfields { raw & 0xff_ffff } else { raw };
            if self.name_is(m, member) {
                return Some(bits);
            }
            if self.name_is(m, b"") && depth < 8 {
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

/// Distinct cgroup ids remembered before the cache starts again.
const CGROUP_CACHE: usize = 16_384;

/// Cgroup v2 paths of the cgroup ids BPF programs read (`kernfs_node.id` of a task's default-hierarchy cgroup),
/// through the host's cgroup2 mount, cached.
pub(crate) struct CgroupPaths {
    mount: Option<(File, String)>,
    cache: HashMap<u64, Option<String>>,
}

impl CgroupPaths {
    /// Through the cgroup2 mount in pid 1's mount table, read here.
    pub(crate) fn open(host: &Host) -> CgroupPaths {
        let data = procfs::mountinfo(host, 1).unwrap_or_default();
        Self::with_mounts(host, &mountinfo::parse(&data).0)
    }

    /// Through the cgroup2 mount in the host's mount table `mounts`, which the caller has already read.
    pub(crate) fn with_mounts(host: &Host, mounts: &[mountinfo::Mount]) -> CgroupPaths {
        CgroupPaths {
            mount: cgroup2_mount(host, mounts),
            cache: HashMap::new(),
        }
    }

    /// The cgroup v2 path of a cgroup id, relative to the cgroup2 root.
    pub(crate) fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cache.get(&id) {
            return p.clone();
        }
        let p = self
            .mount
            .as_ref()
            .and_then(|(mount, at)| cgroup_by_id(mount, at, id));
        if self.cache.len() >= CGROUP_CACHE {
            self.cache.clear();
        }
        self.cache.insert(id, p.clone());
        p
    }
}

/// The host's cgroup2 mount (its root, not a subtree), opened, and the path wonk sees it at.
fn cgroup2_mount(host: &Host, mounts: &[mountinfo::Mount]) -> Option<(File, String)> {
    let m = mounts
        .iter()
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
