//! What deleting each pod will cost: the files, directories and bytes in its containers' writable layers
//! (overlay upperdirs) and its emptyDir volumes, the largest directories by entry count, and the metadata
//! operations a delete will take (one unlink or rmdir per name).
//!
//! A pod with 4.78 M files (242 GB) took about three hours of high write IOPS to delete, which hurt
//! unrelated pods and left containerd shims behind. Pods above `max_files` are flagged before anyone deletes them.
//! Walks are parallel, stay on one filesystem, and stop at a time budget, in which case the figures are lower
//! bounds and say so. Names are counted from getdents' d_type alone, and inodes (a hard-linked file once) from
//! its d_ino, in a bitmap with a memory cap. Bytes need a stat per file, the one cost `find | wc -l` does not pay:
//! by default a directory of more than `sample` files has only a random sample of them statted, and the bytes
//! are then an estimate, labelled as such with its standard error; `exact_bytes` stats every file.

use super::{Check, Context, Invocation, Setting, Settings, Unit};
use crate::args::Seconds;
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::walk::{self, DirVisit};
use crate::host::{mountinfo, procfs};
use crate::metric::{self, Family, Sink};
use crate::owner::Owner;
use crate::term;
use rustix::fs::{AtFlags, FileType};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "layers",
    about: "What deleting each pod will cost: files, directories and bytes in its writable layers and emptyDirs",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(Layers::default()),
    agent,
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "layers-interval",
        default_secs: 3600,
    },
    settings: &[Setting {
        flag: "layers-budget",
        help: "Time budget of one layer walk",
        unit: super::SettingUnit::Seconds,
        default: 30.0,
    }],
    metrics: &[
        Family::gauge(
            "pod_writable_files",
            "Files in a pod's writable layers and emptyDirs (what deleting it will unlink), top-N pods",
        ),
        Family::gauge(
            "pod_writable_bytes",
            "Bytes in a pod's writable layers and emptyDirs, top-N pods",
        ),
    ],
    npd: None,
};

/// `wonk layers` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Flag pods with at least this many files.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_files: u64,
    /// Stop walking after this many seconds (0: no limit); figures are then lower bounds, marked as such.
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    budget: Seconds,
    /// Largest directories to list per layer.
    #[arg(long, default_value_t = 3, value_name = "N")]
    top: usize,
    /// Read every file's size. Otherwise a directory of more than 32 files has 32 of them (per 4,096 entries),
    /// at random, read and scaled up, and the bytes are marked as estimated (`bytes_method`).
    #[arg(long)]
    exact_bytes: bool,
    /// Memory (MiB, per layer) for counting hard links once; past it they may be counted more than once, and
    /// the output says so.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    dedup_memory: usize,
}

fn from_args(m: &clap::ArgMatches, inv: &Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    Ok(Box::new(Layers {
        max_files: a.max_files,
        budget: a.budget.limit(),
        top: a.top,
        all: true,
        progress: inv.progress(),
        exact_bytes: a.exact_bytes,
        dedup_memory: a.dedup_memory.saturating_mul(1 << 20),
        ..Default::default()
    }))
}

fn agent(s: &Settings) -> Box<dyn Check> {
    Box::new(Layers {
        budget: Some(s.seconds("layers-budget")),
        all: true,
        // The agent's memory limit is small: past this inode map, hard links may count twice and the output
        // says so.
        dedup_memory: 4 << 20,
        ..Default::default()
    })
}

/// What one pod's delete will cost, as the metrics export it.
#[derive(Debug, Clone, Serialize)]
pub struct PodCost {
    pub owner: Owner,
    pub files: u64,
    pub bytes: u64,
}

/// Every pod walked.
#[derive(Debug, Default, Serialize)]
#[serde(transparent)]
pub struct LayersOutput {
    pub pods: Vec<PodCost>,
}

impl Output for LayersOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The top-N pods by files.
    fn metrics(&self, sink: &mut Sink) {
        let mut pods: Vec<&PodCost> = self.pods.iter().collect();
        pods.sort_by_key(|p| std::cmp::Reverse(p.files));
        pods.truncate(sink.top);
        for p in pods {
            let mut k = metric::owner_labels(Some(&p.owner));
            k.retain(|(n, _)| n != "container");
            sink.put("pod_writable_files", k.clone(), p.files as f64);
            sink.put("pod_writable_bytes", k, p.bytes as f64);
        }
    }
}

/// The check, and `wonk layers`.
pub struct Layers {
    pub max_files: u64,
    pub budget: Option<Duration>,
    /// Largest directories to list per layer.
    pub top: usize,
    /// Report pods below `max_files` too (as info), for `wonk layers`.
    pub all: bool,
    /// Show progress on stderr (a terminal).
    pub progress: bool,
    /// Stat every regular file for `bytes`; otherwise a directory of more than `sample` files has the sizes of
    /// `sample` of them read and scaled up.
    pub exact_bytes: bool,
    pub sample: usize,
    /// Memory for the inode map that counts hard links once, per layer (bytes).
    pub dedup_memory: usize,
}

impl Default for Layers {
    fn default() -> Layers {
        Layers {
            max_files: 1_000_000,
            budget: Some(Duration::from_secs(5)),
            top: 3,
            all: false,
            progress: false,
            exact_bytes: false,
            sample: 32,
            dedup_memory: 64 << 20,
        }
    }
}

/// One walked directory tree.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// `upperdir` (a container's writable layer) or `emptyDir`.
    pub kind: &'static str,
    pub path: String,
    pub container: Option<String>,
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, devices, sockets, fifos.
    pub other: u64,
    /// Distinct inodes among the names counted in `files`, `dirs` and `other`: a hard-linked file once.
    pub inodes: u64,
    /// `complete`, or `capped`: the inode map reached `--dedup-memory`, and names whose inode was not in it
    /// were counted as new inodes (`inodes`, and sampled `bytes`, may count a hard-linked file more than once).
    pub inode_dedup: &'static str,
    /// Sizes of regular files, hard links counted once: exact, or an estimate (`bytes_method`).
    pub bytes: u64,
    /// `exact`: every regular file's size was read; `sampled`: in directories of more than the sample size,
    /// only a random sample's sizes were read, and scaled up to the directory's file count.
    pub bytes_method: &'static str,
    /// Files whose size was read.
    pub bytes_statted_files: u64,
    /// Files whose size was estimated from their directory's sample, not read.
    pub bytes_estimated_files: u64,
    /// One standard error of the estimate, from the spread of the sampled sizes (0 when exact).
    pub bytes_stderr: u64,
    #[serde(skip)]
    bytes_variance: f64,
    pub largest_dirs: Vec<DirSize>,
    /// The budget stopped the walk: every figure is a lower bound.
    pub lower_bound: bool,
    pub unreadable_dirs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DirSize {
    pub entries: u64,
    pub path: String,
}

/// The layers of one pod (or of one container outside Kubernetes).
struct PodLayers {
    owner: Owner,
    layers: Vec<(&'static str, PathBuf, Option<String>)>,
}

impl Check for Layers {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut costs = LayersOutput::default();
        let start = Instant::now();
        let kubelet = ctx.host.path(&ctx.owners.kubelet_root);
        let unseen = |why: String| {
            BlindSpot::new(
                "layers",
                format!(
                    "emptyDir volumes under {}",
                    ctx.owners.kubelet_root.display()
                ),
                why,
            )
        };
        match std::fs::symlink_metadata(&kubelet) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => out.blind_spots.push(unseen(
                "kubelet's root is not a directory (--kubelet-root)".into(),
            )),
            Err(e) => out.blind_spots.push(unseen(format!(
                "kubelet's root cannot be read: {e} (--kubelet-root)"
            ))),
        }
        let pods = match find_layers(ctx, &mut out.blind_spots) {
            Ok(p) => p,
            Err(e) => {
                out.failed = Some(format!("cannot see mount namespaces: {e}"));
                return out;
            }
        };
        let mut walked = 0u64;
        for (key, pod) in &pods {
            let mut layers = Vec::new();
            for (kind, path, container) in &pod.layers {
                let deadline = self.budget.map(|b| start + b);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    out.blind_spots.push(BlindSpot::new(
                        "layers",
                        path.display().to_string(),
                        "not walked: the time budget ran out",
                    ));
                    continue;
                }
                let layer = measure(ctx, self, kind, path, container.clone(), deadline);
                if layer.inode_dedup == "capped" {
                    out.blind_spots.push(BlindSpot::new(
                        "layers",
                        path.display().to_string(),
                        format!(
                            "the inode map reached --dedup-memory ({} MiB): hard links past it were not matched, so \
                             `inodes` (and sampled `bytes`) may count a hard-linked file more than once",
                            self.dedup_memory >> 20
                        ),
                    ));
                }
                layers.push(layer);
                walked += 1;
            }
            if layers.is_empty() {
                continue;
            }
            let f = finding(key, &pod.owner, &layers, self.max_files);
            costs.pods.push(PodCost {
                owner: pod.owner.clone(),
                files: layers.iter().map(|l| l.files).sum(),
                bytes: layers.iter().map(|l| l.bytes).sum(),
            });
            if self.all || f.severity >= Severity::Warning {
                out.findings.push(f);
            }
        }
        out.stats = vec![
            ("pods".into(), pods.len() as u64),
            ("layers_walked".into(), walked),
        ];
        out.output = Some(Box::new(costs));
        out
    }
}

fn finding(key: &str, owner: &Owner, layers: &[Layer], max_files: u64) -> Finding {
    let sum = |f: fn(&Layer) -> u64| layers.iter().map(f).sum::<u64>();
    let (files, dirs, other, bytes) = (
        sum(|l| l.files),
        sum(|l| l.dirs),
        sum(|l| l.other),
        sum(|l| l.bytes),
    );
    let (statted, estimated) = (
        sum(|l| l.bytes_statted_files),
        sum(|l| l.bytes_estimated_files),
    );
    let stderr = layers.iter().map(|l| l.bytes_variance).sum::<f64>().sqrt();
    let lower = layers.iter().any(|l| l.lower_bound);
    let capped = layers.iter().any(|l| l.inode_dedup == "capped");
    let at_least = if lower { "at least " } else { "" };
    let ops = files + dirs + other;
    let big = files >= max_files;
    let size = if estimated > 0 {
        format!(
            "about {} (estimated from the sizes of {statted} of {} files)",
            term::human_bytes(bytes),
            statted + estimated
        )
    } else {
        term::human_bytes(bytes)
    };
    let mut f = Finding {
        check: "layers",
        kind: if big { "costly-delete" } else { "layers" },
        severity: if big { Severity::Warning } else { Severity::Info },
        summary: format!(
            "{}: {at_least}{files} files, {dirs} directories, {size} in {} layer(s); deleting it takes {at_least}{ops} metadata operations",
            owner_label(key, owner),
            layers.len()
        ),
        subject: key.to_string(),
        owner: (!owner.is_empty()).then(|| owner.clone()),
        evidence: Vec::new(),
        advice: Vec::new(),
    }
    .with("files", files)
    .with("dirs", dirs)
    .with("other", other)
    .with("inodes", sum(|l| l.inodes))
    .with("inode_dedup", if capped { "capped" } else { "complete" })
    .with("bytes", bytes)
    .with("bytes_method", if estimated > 0 { "sampled" } else { "exact" })
    .with("bytes_statted_files", statted)
    .with("bytes_estimated_files", estimated)
    .with("bytes_stderr", stderr.round() as u64)
    .with("metadata_operations", ops)
    .with("lower_bound", lower)
    .with("max_files", max_files)
    .with("layers", layers);
    if big {
        f.advice.push(format!(
            "{files} files is above {max_files}: deleting this pod unlinks every one of them, a burst of metadata IO \
             that slows every pod on the node (a pod with 4.78 M files took about 3 hours to delete); drain the node or clean \
             the files up gradually before deleting it"
        ));
    }
    f
}

fn owner_label(key: &str, owner: &Owner) -> String {
    if owner.is_empty() {
        key.to_string()
    } else {
        owner.pod_label()
    }
}

/// Every pod's layers: containers' upperdirs, and emptyDirs from kubelet's pod dirs. A container's root is found
/// in its own mount table, but where its upperdir is comes only from the host's mount of the same overlay: a
/// container can mount an overlay of its own on `/` with `upperdir=/etc`, and that path is not its layer.
fn find_layers(
    ctx: &Context,
    blind_spots: &mut Vec<BlindSpot>,
) -> Result<BTreeMap<String, PodLayers>, String> {
    let host = ctx.host;
    let (namespaces, _) = ctx.owners.namespaces().map_err(str::to_string)?;
    let host_ns = ctx.owners.host_mnt_ns();
    let host_mounts = match ctx.owners.host_mounts() {
        Ok(m) => m,
        Err(e) => {
            blind_spots.push(BlindSpot::new(
                "layers",
                "containers' writable layers",
                format!(
                    "the host's mount table is unreadable ({e}); only it may say where a layer is"
                ),
            ));
            &[]
        }
    };
    let mut pods: BTreeMap<String, PodLayers> = BTreeMap::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for ns in namespaces.iter().filter(|n| Some(n.inode) != host_ns) {
        let Some((pid, data)) = ns
            .pids
            .iter()
            .find_map(|&p| procfs::mountinfo(host, p).ok().map(|d| (p, d)))
        else {
            continue;
        };
        let (mounts, _) = mountinfo::parse(&data);
        let Some(root) = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == b"/" && m.fs_type == "overlay")
        else {
            continue;
        };
        let Some(host_root) = mountinfo::host_overlay(root, host_mounts) else {
            if !host_mounts.is_empty() {
                blind_spots.push(BlindSpot::new(
                    "layers",
                    format!("the overlay root of pid {pid} (device {}:{})", root.major, root.minor),
                    "not in the host's mount table: an overlay mounted inside the container, whose upperdir \
                     is a path as the container sees it; not walked",
                ));
            }
            continue;
        };
        let Some(upper) = host_root.super_option("upperdir") else {
            continue;
        };
        let upper = crate::host::bytes_path(&mountinfo::unescape_overlay(upper)).to_path_buf();
        if !seen.insert(upper.clone()) {
            continue;
        }
        let owner = ctx.owners.owner_of_pid(pid).unwrap_or_default();
        let key = owner
            .pod_uid
            .clone()
            .unwrap_or_else(|| format!("pid {pid}"));
        let entry = pods.entry(key).or_insert_with(|| PodLayers {
            owner: pod_owner(&owner),
            layers: Vec::new(),
        });
        entry
            .layers
            .push(("upperdir", upper, Some(owner.container_label())));
    }
    let pods_dir = host.path(ctx.owners.kubelet_root.join("pods"));
    for uid_dir in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
        let uid = uid_dir.file_name().to_string_lossy().into_owned();
        let ed = uid_dir.path().join("volumes/kubernetes.io~empty-dir");
        for vol in std::fs::read_dir(&ed).into_iter().flatten().flatten() {
            let node_path = ctx
                .owners
                .kubelet_root
                .join("pods")
                .join(&uid)
                .join("volumes/kubernetes.io~empty-dir")
                .join(vol.file_name());
            let entry = pods.entry(uid.clone()).or_insert_with(|| PodLayers {
                owner: ctx.owners.owner_of_pod_uid(&uid),
                layers: Vec::new(),
            });
            entry.layers.push(("emptyDir", node_path, None));
        }
    }
    Ok(pods)
}

/// The pod part of a container's owner.
fn pod_owner(o: &Owner) -> Owner {
    Owner {
        namespace: o.namespace.clone(),
        pod: o.pod.clone(),
        pod_uid: o.pod_uid.clone(),
        qos: o.qos,
        runtime: o.runtime.clone(),
        ..Owner::default()
    }
}

/// Inode numbers seen in one walk, one bit each, in chunks of 4,096 consecutive numbers (512 bytes), up to a
/// memory cap: a filesystem allocates a directory's inodes close together, so a million files take a few hundred
/// chunks. Past the cap, numbers in chunks not yet made are not remembered, and the walk says so.
struct InodeSet {
    chunks: HashMap<u64, Box<[u64; 64]>, std::hash::BuildHasherDefault<Fibonacci>>,
    max_chunks: usize,
    capped: bool,
}

/// The inode map's hash: one multiplication (its keys are numbers, and nobody chooses them to collide but the
/// owner of the files, who gains nothing but a slower walk of their own pod).
#[derive(Default)]
struct Fibonacci(u64);

impl std::hash::Hasher for Fibonacci {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What the inode map knew of a name's inode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    First,
    Again,
    /// Past the memory cap: not known.
    Unknown,
}

/// Bytes one chunk costs, with its share of the map.
const CHUNK_COST: usize = 512 + 32;

impl InodeSet {
    fn new(max_bytes: usize) -> InodeSet {
        InodeSet {
            chunks: HashMap::default(),
            max_chunks: max_bytes / CHUNK_COST,
            capped: false,
        }
    }

    fn insert(&mut self, ino: u64) -> Seen {
        let key = ino >> 12;
        if self.chunks.len() >= self.max_chunks && !self.chunks.contains_key(&key) {
            self.capped = true;
            return Seen::Unknown;
        }
        let chunk = self.chunks.entry(key).or_insert_with(|| Box::new([0; 64]));
        let (word, bit) = ((ino >> 6) as usize & 63, 1u64 << (ino & 63));
        if chunk[word] & bit != 0 {
            return Seen::Again;
        }
        chunk[word] |= bit;
        Seen::First
    }
}

/// `k` distinct indices below `n`, at random (Floyd's algorithm) but the same for the same seed: an evenly
/// spaced sample could fall in step with a pattern in the names (every tenth file large, say).
fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(k);
    for j in n.saturating_sub(k)..n {
        let t = (next() % (j as u64 + 1)) as usize;
        out.push(if out.contains(&t) { j } else { t });
    }
    out
}

#[derive(Default)]
struct Tally {
    files: u64,
    dirs: u64,
    other: u64,
    inodes: u64,
    /// Bytes of files whose size was read.
    bytes: u64,
    /// Bytes estimated for sampled directories, and the variance of that estimate.
    estimate: f64,
    variance: f64,
    statted: u64,
    estimated_files: u64,
    linked: HashSet<u64>,
    largest: Vec<DirSize>,
}

/// Walks one layer.
pub(crate) fn measure(
    ctx: &Context,
    opts: &Layers,
    kind: &'static str,
    node_path: &Path,
    container: Option<String>,
    deadline: Option<Instant>,
) -> Layer {
    let tally = Mutex::new(Tally::default());
    let inodes = Mutex::new(InodeSet::new(opts.dedup_memory));
    let last = Mutex::new(Instant::now());
    let visit = |v: &DirVisit| {
        let (mut files, mut dirs, mut other) = (0, 0, 0);
        for e in v.entries {
            match e.kind {
                FileType::Directory => dirs += 1,
                FileType::RegularFile | FileType::Unknown => files += 1,
                _ => other += 1,
            }
        }
        // Every name is one unlink, but a hard-linked inode is counted once: by d_ino, the walk being on one
        // filesystem. A directory has one name.
        let seen: Vec<Seen> = {
            let mut set = inodes.lock().unwrap_or_else(|e| e.into_inner());
            v.entries
                .iter()
                .map(|e| match e.kind {
                    FileType::Directory => Seen::First,
                    _ => set.insert(e.ino),
                })
                .collect()
        };
        let new_inodes = seen.iter().filter(|&&s| s != Seen::Again).count() as u64;
        // Bytes: the size of every regular file not counted already, or of a sample of them.
        let cands: Vec<(&walk::Entry, Seen)> = v
            .entries
            .iter()
            .zip(seen)
            .filter(|(e, s)| {
                *s != Seen::Again && matches!(e.kind, FileType::RegularFile | FileType::Unknown)
            })
            .collect();
        let stat = |e: &walk::Entry| {
            rustix::fs::statat(v.fd, e.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).ok()
        };
        let (mut bytes, mut statted, mut links) = (0, 0, Vec::new());
        let (mut estimate, mut variance, mut estimated_files) = (0.0, 0.0, 0);
        if opts.exact_bytes || cands.len() <= opts.sample {
            for (e, s) in &cands {
                let Some(st) = stat(e) else { continue };
                statted += 1;
                if *s == Seen::Unknown && st.st_nlink > 1 {
                    links.push((st.st_ino, st.st_size as u64));
                } else {
                    bytes += st.st_size as u64;
                }
            }
        } else {
            let n = cands.len();
            let seed = cands[0].0.ino ^ (n as u64).rotate_left(32);
            let sizes: Vec<f64> = sample_indices(n, opts.sample, seed)
                .into_iter()
                .filter_map(|i| stat(cands[i].0))
                .map(|st| st.st_size as f64)
                .collect();
            let k = sizes.len();
            if k > 0 {
                let mean = sizes.iter().sum::<f64>() / k as f64;
                estimate = mean * n as f64;
                if k > 1 {
                    let s2 = sizes.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
                    variance = (n as f64).powi(2) * (1.0 - k as f64 / n as f64) * s2 / k as f64;
                }
            }
            statted = k as u64;
            estimated_files = (n - k) as u64;
        }
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        t.files += files;
        t.dirs += dirs;
        t.other += other;
        t.inodes += new_inodes;
        t.bytes += bytes;
        t.estimate += estimate;
        t.variance += variance;
        t.statted += statted;
        t.estimated_files += estimated_files;
        for (ino, size) in links {
            if t.linked.insert(ino) {
                t.bytes += size;
            }
        }
        if let Some(n) = v.total.filter(|&n| {
            opts.top > 0 && (t.largest.len() < opts.top || t.largest.iter().any(|d| d.entries < n))
        }) {
            t.largest.push(DirSize {
                entries: n,
                path: v.path().display().to_string(),
            });
            t.largest.sort_by(|a, b| b.cmp(a));
            t.largest.truncate(opts.top);
        }
        if opts.progress {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if l.elapsed() > Duration::from_millis(200) {
                eprint!(
                    "\r\x1b[K{}: {} files, {} directories",
                    crate::term::escape(&node_path.display().to_string()),
                    t.files,
                    t.dirs
                );
                *l = Instant::now();
            }
        }
    };
    // More workers than cores: cold, they wait on the disk for directory blocks; 4 to 16 took the same time warm
    // on 2 cores, and 8 about 0.7 of 2's time cold (docs/BENCHMARKS.md).
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_mul(4)
        .clamp(4, 16);
    let st = walk::walk(&ctx.host.path(node_path), threads, deadline, &visit);
    if opts.progress {
        eprint!("\r\x1b[K");
    }
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let capped = inodes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .capped;
    let to_node = |p: String| {
        ctx.host
            .to_node_path(Path::new(&p))
            .map_or(p, |n| n.display().to_string())
    };
    Layer {
        kind,
        path: node_path.display().to_string(),
        container,
        files: t.files,
        dirs: t.dirs,
        other: t.other,
        inodes: t.inodes,
        inode_dedup: if capped { "capped" } else { "complete" },
        bytes: t.bytes + t.estimate.round() as u64,
        bytes_method: if t.estimated_files > 0 {
            "sampled"
        } else {
            "exact"
        },
        bytes_statted_files: t.statted,
        bytes_estimated_files: t.estimated_files,
        bytes_stderr: t.variance.sqrt().round() as u64,
        bytes_variance: t.variance,
        largest_dirs: t
            .largest
            .into_iter()
            .map(|d| DirSize {
                entries: d.entries,
                path: to_node(d.path),
            })
            .collect(),
        lower_bound: st.stopped,
        unreadable_dirs: st.unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(term::human_bytes(12), "12 B");
        assert_eq!(term::human_bytes(242 << 30), "242.0 GiB");
    }
}
