//! Open files and file mappings whose inode has no link left, as the kernel's BPF iterators see them
//! (`held.bpf.c`): one walk over every process's file table and address space, in the kernel, which hands over
//! only the regular files with no link, where /proc costs a `readlinkat` per descriptor and a formatted
//! `/proc/PID/maps` per process. `checks::deleted` then reads each one through /proc as it reads what it finds
//! itself (the path, and `statx` of the file), so both sources judge the same facts.
//!
//! Where the kernel has the open-coded task, VMA and number iterators (Linux 6.7+), one program run walks
//! everything and leaves its records in a map wonk has mapped; elsewhere the `task_file` and `task_vma` iterators
//! run a program per open file and per mapping (5.12+).

use crate::host::bpf::{
    config_map, denied, iter_create, link_create, map_create, output_map, prog_load, program,
    vmlinux, Btf, Mapped, BPF_MAP_TYPE_ARRAY, VMLINUX,
};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/held.bpf.o"));

/// `struct rec` in held.bpf.c.
const REC_LEN: usize = 72;
/// `struct totals` in held.bpf.c.
const TOTALS_LEN: usize = 40;
const KIND_HEADER: u32 = 1;
const KIND_TASK: u32 = 2;
const KIND_FD: u32 = 3;
const KIND_MAP: u32 = 4;
const KIND_END: u32 = 5;
const KIND_BUSY: u32 = 6;
/// Records the one-run walk has room for (a record per process with files or memory, and one per held file).
const WALK_RECORDS: u32 = 65_536;
/// Bytes of records the per-object iterators may hand over in one walk: a process can hold a million
/// descriptors on files it unlinked, and wonk's memory stays bounded.
const MAX_BYTES: usize = 64 << 20;
/// Reads in a row that may return EAGAIN: the kernel says so when an iterator visited a million objects
/// without output, and goes on at the next read.
const MAX_AGAIN: u32 = 64;

/// The iterators, loaded and linked once; each [`Walker::walk`] runs them anew.
pub struct Walker {
    mode: Mode,
}

enum Mode {
    /// `walk` in held.bpf.c, linked to wonk's main thread, and its output maps.
    Walk {
        link: OwnedFd,
        recs: Mapped,
        totals: Mapped,
    },
    /// `held_fds` and `held_maps`.
    Each { fds: OwnedFd, maps: OwnedFd },
}

/// How a file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Open as descriptor `fd` of the thread's file table.
    Fd(u32),
    /// Mapped over `start..end` of the thread's address space.
    Map { start: u64, end: u64 },
}

/// A regular file with no link, held by a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub tgid: u32,
    pub tid: u32,
    pub how: How,
    /// The inode's device as the kernel encodes it (major << 20 | minor) and number: what a process's maps
    /// show, to tell the segments of one mapped file from another file.
    pub dev: u32,
    pub ino: u64,
}

/// A process the walk visited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its name (`comm`), as /proc/PID/stat shows it.
    pub comm: String,
    /// Its cgroup id on the v2 hierarchy (the kernfs node id), 0 if it has none.
    pub cgroup_id: u64,
}

/// One walk.
#[derive(Debug, Default)]
pub struct Walk {
    /// In the kernel's order: by process, descriptors before mappings.
    pub held: Vec<Held>,
    /// The processes (by thread group id) with an open file or a mapping, wonk's own included.
    pub processes: BTreeMap<u32, Process>,
    /// Processes whose mappings the walk could not read (their memory map was locked): read them through /proc.
    pub busy: Vec<u32>,
    /// Open files and mappings the walk visited.
    pub fds_visited: u64,
    pub maps_visited: u64,
    /// The records kept, when the walk had more (the rest are not in `held`).
    pub truncated: Option<usize>,
    /// `walk` or `per-object`: which programs ran.
    pub programs: &'static str,
}

impl Walker {
    /// Loads and links the programs, and checks with a first walk that the kernel's pids are the ones wonk's
    /// /proc shows. The error is the reason, for `--source auto` to show.
    pub fn open() -> Result<Walker, String> {
        Self::open_as(std::env::var_os("WONK_BPF_PER_TASK").is_some())
    }

    /// As [`Walker::open`]; `per_object` takes the per-object iterators even where the walk would run.
    fn open_as(per_object: bool) -> Result<Walker, String> {
        let data = vmlinux()?;
        let btf = Btf::parse(data.bytes()).map_err(|e| format!("{VMLINUX}: {e}"))?;
        let config = btf.members([
            ("task_struct", "tgid"),
            ("task_struct", "pid"),
            ("file", "f_inode"),
            ("inode", "i_nlink"),
            ("inode", "i_mode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("super_block", "s_dev"),
            ("vm_area_struct", "vm_start"),
            ("vm_area_struct", "vm_end"),
            ("vm_area_struct", "vm_file"),
            ("task_struct", "files"),
            ("task_struct", "mm"),
            ("files_struct", "fdt"),
            ("fdtable", "max_fds"),
            ("fdtable", "fd"),
            ("fdtable", "open_fds"),
            ("task_struct", "comm"),
            ("task_struct", "cgroups"),
            ("css_set", "dfl_cgrp"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
        ])?;
        const KFUNCS: [&str; 9] = [
            "bpf_iter_task_new",
            "bpf_iter_task_next",
            "bpf_iter_task_destroy",
            "bpf_iter_task_vma_new",
            "bpf_iter_task_vma_next",
            "bpf_iter_task_vma_destroy",
            "bpf_iter_num_new",
            "bpf_iter_num_next",
            "bpf_iter_num_destroy",
        ];
        let kfuncs: Option<Vec<(&str, u32)>> = KFUNCS
            .iter()
            .zip(btf.funcs(KFUNCS))
            .map(|(&f, id)| Some((f, id?)))
            .collect();
        let [task_at, fds_at, maps_at] =
            btf.funcs(["bpf_iter_task", "bpf_iter_task_file", "bpf_iter_task_vma"]);
        let attach = |id: Option<u32>, f: &str, since: &str| {
            id.ok_or_else(|| {
                format!("the kernel has no BPF {f} iterator ({f} is not in its BTF; Linux {since} or later)")
            })
        };
        let task_at = attach(task_at, "bpf_iter_task", "5.8")?;
        let each_at = (
            attach(fds_at, "bpf_iter_task_file", "5.8"),
            attach(maps_at, "bpf_iter_task_vma", "5.12"),
        );
        drop(btf);
        drop(data);
        let cfg = config_map(&config)?;
        // WONK_BPF_PER_TASK=1 runs the per-object programs where the walk would run (the tests compare both).
        let walk = match kfuncs {
            Some(_) if per_object => Err("WONK_BPF_PER_TASK is set".to_string()),
            Some(k) => load_walk(&cfg, task_at, &k),
            _ => Err(
                "the kernel has no open-coded task, VMA or number iterator (Linux 6.7 or later)"
                    .into(),
            ),
        };
        let mode = match walk {
            Ok(m) => m,
            Err(why) => {
                let (fds_at, maps_at) = (each_at.0?, each_at.1?);
                load_each(&cfg, fds_at, maps_at)
                    .map_err(|e| format!("{e} (and the one-run walk: {why})"))?
            }
        };
        let w = Walker { mode };
        // The one-run walk checks its reader at each run (a first run here would cost a whole walk).
        if let Mode::Each { fds, .. } = &w.mode {
            let (reader, _) = read_walk(fds, &mut Vec::new(), 0)
                .map_err(|e| format!("reading the open-file iterator: {e}"))?;
            same_pid_namespace(reader)?;
        }
        Ok(w)
    }

    /// Walks every open file and every mapping.
    pub fn walk(&self) -> io::Result<Walk> {
        let mut out = Walk::default();
        match &self.mode {
            Mode::Walk { link, recs, totals } => {
                out.programs = "walk";
                read_walk(link, &mut Vec::new(), 0)?;
                let t = totals.bytes();
                same_pid_namespace(Some(word(t, 8))).map_err(io::Error::other)?;
                let (records, dropped) = (word(t, 0) as usize, word(t, 4));
                out.fds_visited = u64::from_ne_bytes(t[24..32].try_into().expect("8 bytes"));
                out.maps_visited = u64::from_ne_bytes(t[32..40].try_into().expect("8 bytes"));
                if dropped > 0 {
                    out.truncated = Some(records);
                }
                let bytes = recs.bytes();
                let end = (records * REC_LEN).min(bytes.len());
                out.add(&bytes[..end], None);
            }
            Mode::Each { fds, maps } => {
                out.programs = "per-object";
                let mut buf = Vec::new();
                for (link, maps) in [(fds, false), (maps, true)] {
                    buf.clear();
                    let (_, truncated) = read_walk(link, &mut buf, MAX_BYTES)?;
                    if truncated {
                        out.truncated = Some(MAX_BYTES / REC_LEN);
                    }
                    out.add(&buf, Some(maps));
                }
            }
        }
        Ok(out)
    }
}

impl Walk {
    /// Adds the records in `buf`; `maps` says which per-object iterator wrote them (its end record counts
    /// mappings or descriptors), `None` for the walk.
    fn add(&mut self, buf: &[u8], maps: Option<bool>) {
        for r in buf.chunks_exact(REC_LEN) {
            let u64_at = |i: usize| u64::from_ne_bytes(r[i..i + 8].try_into().expect("8 bytes"));
            let (tgid, tid) = (word(r, 4), word(r, 8));
            let how = match word(r, 0) {
                KIND_TASK => {
                    let comm = &r[56..72];
                    let comm = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
                    self.processes.insert(
                        tgid,
                        Process {
                            comm: String::from_utf8_lossy(comm).into_owned(),
                            cgroup_id: u64_at(48),
                        },
                    );
                    continue;
                }
                KIND_BUSY => {
                    self.busy.push(tgid);
                    continue;
                }
                KIND_END if maps == Some(true) => {
                    self.maps_visited = u64_at(16);
                    continue;
                }
                KIND_END => {
                    self.fds_visited = u64_at(16);
                    continue;
                }
                KIND_FD => How::Fd(word(r, 12)),
                KIND_MAP => How::Map {
                    start: u64_at(16),
                    end: u64_at(24),
                },
                _ => continue,
            };
            self.held.push(Held {
                tgid,
                tid,
                how,
                dev: word(r, 40),
                ino: u64_at(32),
            });
        }
    }
}

/// Whether the iterators' reader, as the kernel's initial pid namespace knows it, is the pid /proc shows wonk.
fn same_pid_namespace(reader: Option<u32>) -> Result<(), String> {
    if reader == Some(std::process::id()) {
        return Ok(());
    }
    Err(format!(
        "wonk runs in a pid namespace of its own (the kernel knows it as pid {}, /proc as {}); the iterators' \
         pids would not match /proc",
        reader.map_or("unknown".to_string(), |r| r.to_string()),
        std::process::id()
    ))
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `walk`: its output maps created and mapped, the program loaded with maps and kfuncs patched in, and linked to
/// wonk's own main thread, so that each read runs it once.
fn load_walk(cfg: &OwnedFd, attach: u32, kfuncs: &[(&str, u32)]) -> Result<Mode, String> {
    let map = |value, entries, name: &str| output_map(value, entries, name, "the file walk");
    let (recs_fd, recs) = map(REC_LEN, WALK_RECORDS, "wonk_held")?;
    let (totals_fd, totals) = map(TOTALS_LEN, 1, "wonk_held_tot")?;
    let maps = [("config", cfg), ("recs", &recs_fd), ("totals", &totals_fd)];
    let mut insns = program(OBJECT, "iter/task", &maps, kfuncs)?;
    let prog = prog_load(&mut insns, attach, "wonk_held", "the file walk")?;
    let link = link_create(&prog, Some(std::process::id()))
        .map_err(|e| format!("linking the file walk: {e}"))?;
    Ok(Mode::Walk { link, recs, totals })
}

/// `held_fds` and `held_maps`, each linked over every task.
fn load_each(cfg: &OwnedFd, fds_at: u32, maps_at: u32) -> Result<Mode, String> {
    let last = map_create(BPF_MAP_TYPE_ARRAY, 8, 1, 0, "wonk_last")
        .map_err(|e| denied("creating the file iterators' map", e))?;
    let maps = [("config", cfg), ("last", &last)];
    let load = |section: &str, name: &str, what: &str, at: u32| {
        let mut insns = program(OBJECT, section, &maps, &[])?;
        let prog = prog_load(&mut insns, at, name, what)?;
        link_create(&prog, None).map_err(|e| format!("linking {what}: {e}"))
    };
    Ok(Mode::Each {
        fds: load(
            "iter/task_file",
            "wonk_held_fds",
            "the open-file iterator",
            fds_at,
        )?,
        maps: load(
            "iter/task_vma",
            "wonk_held_maps",
            "the mapping iterator",
            maps_at,
        )?,
    })
}

/// Reads one walk of the iterator on `link` into `buf`, at most `limit` bytes (0: the header only, or for the
/// one-run walk, nothing: its records are in maps). Returns the reading process's pid from a per-object
/// iterator's header, as the kernel's initial pid namespace knows it, and whether records were left unread.
fn read_walk(link: &OwnedFd, buf: &mut Vec<u8>, limit: usize) -> io::Result<(Option<u32>, bool)> {
    let mut f = std::fs::File::from(iter_create(link)?);
    // A header-only read asks for one record, so that a per-object iterator stops after the first object.
    let mut chunk = vec![0u8; limit.clamp(REC_LEN, 32 << 10)];
    let mut again = 0;
    let mut reader = None;
    let mut truncated = false;
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                again = 0;
                let before = buf.len();
                buf.extend_from_slice(&chunk[..n]);
                if before == 0 && buf.len() >= REC_LEN && word(buf, 0) == KIND_HEADER {
                    reader = Some(word(buf, 4));
                }
                if buf.len() > limit {
                    truncated = limit > 0;
                    buf.truncate(limit - limit % REC_LEN);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && again < MAX_AGAIN => again += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((reader, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A file this process holds open after unlinking it, and another it maps after unlinking it, are in the
    /// walk with their descriptor and address range; a linked file it holds is not.
    #[test]
    fn the_walk_finds_this_process_holding_unlinked_files() {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            eprintln!("skipped: BPF iterators need root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wonk-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open_path = dir.join("open");
        let mapped_path = dir.join("mapped");
        let kept_path = dir.join("kept");
        std::fs::write(&open_path, b"held by a descriptor").unwrap();
        std::fs::write(&mapped_path, vec![7u8; 8192]).unwrap();
        std::fs::write(&kept_path, b"still linked").unwrap();
        let open = std::fs::File::open(&open_path).unwrap();
        let kept = std::fs::File::open(&kept_path).unwrap();
        let mapped = std::fs::File::open(&mapped_path).unwrap();
        // SAFETY: a new private read-only mapping of a file this test owns; unmapped below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                mapped.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        drop(mapped);
        std::fs::remove_file(&open_path).unwrap();
        std::fs::remove_file(&mapped_path).unwrap();

        let walks: Vec<Walk> = [false, true]
            .into_iter()
            .map(|per_object| {
                let w = Walker::open_as(per_object).expect("the iterators load as root");
                // Another test's thread may hold this process's mmap lock for a moment: the walk then says so
                // (busy) instead of reading its mappings; walk again.
                let me = std::process::id();
                let mut walk = w.walk().unwrap();
                for _ in 0..20 {
                    if !walk.busy.contains(&me) {
                        break;
                    }
                    walk = w.walk().unwrap();
                }
                walk
            })
            .collect();
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(at, 8192) };
        std::fs::remove_dir_all(&dir).unwrap();

        let me = std::process::id();
        assert_eq!(
            walks[0].programs, "walk",
            "this kernel runs the one-run walk"
        );
        assert_eq!(walks[1].programs, "per-object");
        for walk in &walks {
            let mine: Vec<&Held> = walk.held.iter().filter(|h| h.tgid == me).collect();
            assert!(
                mine.iter()
                    .any(|h| h.how == How::Fd(open.as_raw_fd() as u32)),
                "descriptor {} not in {mine:?}",
                open.as_raw_fd()
            );
            assert!(!mine
                .iter()
                .any(|h| h.how == How::Fd(kept.as_raw_fd() as u32)));
            let start = at as u64;
            assert!(
                mine.iter().any(|h| h.how
                    == How::Map {
                        start,
                        end: start + 8192
                    }),
                "mapping at {start:#x} not in {mine:?}"
            );
            let p = &walk.processes[&me];
            assert_eq!(
                p.comm,
                std::fs::read_to_string("/proc/self/comm")
                    .unwrap()
                    .trim_end()
            );
            assert!(p.cgroup_id > 0, "{p:?}");
            assert!(walk.fds_visited >= 3 && walk.maps_visited > 0, "{walk:?}");
            assert!(walk.truncated.is_none() && !walk.busy.contains(&me));
        }
    }
}
