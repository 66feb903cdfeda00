//! Directories whose ext4 htree index is full or filling: new names fail with ENOSPC on a disk with room; seen weeks ahead.
//!
//! [`judge`] turns one [`HtreeReport`] (from [`crate::ext4::analyze`]) into a finding with its owner.
//! [`scan_mount`] finds the directories at risk on one filesystem: a walk of directories only (d_type, no stat
//! of regular files) that stays on that filesystem, a cheap prefilter on directory size, then index reads for
//! the candidates. [`HtreeRisk`] is the check `wonk scan` runs over the filesystems that hold containerd's and
//! kubelet's directories, within a time budget.

use super::{Check, Context, Invocation, Npd, Setting, Settings, Unit};
use crate::args::Seconds;
use crate::ext4::htree::{self, HtreeReport, IndexReport};
use crate::ext4::Ext4Error;
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::Host;
use crate::metric::{self, Family, Sink};
use crate::owner::Owner;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "htree",
    about: "Read the htree index of ext4 directories (never their entries): fill per level, entries, the share of \
            names failing with ENOSPC now, and the creates left before the first failure",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(HtreeRisk::default()),
    agent,
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "htree-interval",
        default_secs: 3600,
    },
    settings: &[Setting {
        flag: "htree-budget",
        help: "Time budget of one htree scan",
        unit: super::SettingUnit::Seconds,
        default: 30.0,
    }],
    metrics: &[
        Family::gauge(
            "htree_root_fill_ratio",
            "Fill of an ext4 directory's htree root block (count/limit), for the top-N directories at risk",
        ),
        Family::gauge(
            "htree_node_fill_ratio",
            "Fill of the fullest index node at the directory's last index level (count/limit)",
        ),
        Family::gauge("htree_entries", "Estimated entries in the directory"),
        Family::gauge(
            "htree_entries_left",
            "Estimated creates left before the first ENOSPC from a full index",
        ),
        Family::gauge(
            "htree_failing_ratio",
            "Share of the hash space for which a create fails with ENOSPC now",
        ),
        Family::gauge(
            "htree_seconds_to_full",
            "Estimated seconds until the first ENOSPC from a full index, at the growth the agent saw over its last \
             runs (only for growing directories)",
        ),
    ],
    npd: Some(Npd {
        condition: "HtreeIndexNearlyFull",
        ok_reason: "HtreeIndexesHaveRoom",
        ok_message: "ext4 directory indexes have room",
    }),
};

/// `wonk htree` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directories to read (on ext4, or on overlay with an ext4 upper layer).
    #[arg(required_unless_present = "scan")]
    paths: Vec<PathBuf>,
    /// Judge creates of names this long (default: the median of the directory's own names).
    #[arg(long, value_name = "BYTES")]
    name_len: Option<usize>,
    /// Find the directories at risk on the filesystem mounted at MOUNTPOINT instead.
    #[arg(long, value_name = "MOUNTPOINT", conflicts_with = "paths")]
    scan: Option<PathBuf>,
    /// With --scan: read the index of directories at least this large (bytes).
    #[arg(long, default_value_t = 256 << 10, value_name = "BYTES")]
    min_size: u64,
    /// With --scan: stop after this many seconds (0: no limit); what was not read is listed.
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    budget: Seconds,
}

fn from_args(m: &clap::ArgMatches, inv: &Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    let target = match a.scan {
        Some(mount) => Target::Mount(super::absolute(&mount, inv.host_root)?),
        None => Target::Paths(
            a.paths
                .iter()
                .map(|p| super::absolute(p, inv.host_root))
                .collect::<anyhow::Result<_>>()?,
        ),
    };
    Ok(Box::new(Htree {
        target,
        name_len: a.name_len,
        scan: ScanOptions {
            min_dir_size: a.min_size,
            budget: a.budget.limit(),
            progress: inv.progress(),
            min_severity: Severity::Info,
        },
    }))
}

/// The filesystems of containerd's roots and kubelet's root, scanned like `htree --scan`, every indexed directory
/// kept (info included) so that fill is exported before it becomes a warning.
fn agent(s: &Settings) -> Box<dyn Check> {
    Box::new(HtreeRisk {
        budget: s.seconds("htree-budget"),
        min_severity: Severity::Info,
        history: Some(Mutex::new(History::default())),
    })
}

/// `wonk htree PATH...` or `wonk htree --scan MOUNTPOINT`.
pub struct Htree {
    pub target: Target,
    pub name_len: Option<usize>,
    pub scan: ScanOptions,
}

/// What `wonk htree` reads.
pub enum Target {
    /// These directories (node paths).
    Paths(Vec<PathBuf>),
    /// The directories at risk on the filesystem mounted here (a node path).
    Mount(PathBuf),
}

impl Check for Htree {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let paths = match &self.target {
            Target::Mount(mount) => return scan_mount(ctx, mount, &self.scan),
            Target::Paths(p) => p,
        };
        let mut out = CheckOutput::default();
        let mut dirs = Vec::new();
        for p in paths {
            match htree::analyze(ctx.host, p, self.name_len) {
                Ok(r) => {
                    let f = judge(ctx, &r);
                    dirs.extend(IndexedDir::of(&r, &f));
                    out.findings.push(f);
                }
                Err(e) => match judge_error(ctx, p, &e) {
                    Ok(f) => out.findings.push(f),
                    Err(b) => out.blind_spots.push(b),
                },
            }
        }
        if out.findings.is_empty() {
            out.failed = Some(format!(
                "no directory could be read: {}",
                out.blind_spots
                    .iter()
                    .map(|b| format!("{}: {}", b.what, b.why))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        out.output = Some(Box::new(HtreeOutput { dirs }));
        out
    }
}

/// Every indexed directory the check read, with the figures the metrics export.
#[derive(Debug, Default, Serialize)]
#[serde(transparent)]
pub struct HtreeOutput {
    pub dirs: Vec<IndexedDir>,
}

/// One indexed directory's fill.
#[derive(Debug, Clone, Serialize)]
pub struct IndexedDir {
    pub path: String,
    pub device: String,
    pub inode: u64,
    pub large_dir: bool,
    pub owner: Option<Owner>,
    /// count/limit of the root block.
    pub root_fill: f64,
    /// count/limit of the fullest node at the last index level; `None` when the root points at leaves.
    pub node_fill: Option<f64>,
    pub entries: u64,
    pub entries_left: Option<u64>,
    pub failing_share: f64,
    /// The agent only, from its history of this directory: entries added per second since its oldest sample
    /// (negative when it shrank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_per_second: Option<f64>,
    /// `entries_left` at `growth_per_second`, when it grows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_to_full: Option<f64>,
}

impl IndexedDir {
    /// The figures of a report that has an index; `None` for a directory without one.
    fn of(r: &HtreeReport, f: &Finding) -> Option<IndexedDir> {
        let ix = r.index.as_ref()?;
        let ratio =
            |count: u16, limit: u16| (limit > 0).then(|| f64::from(count) / f64::from(limit));
        Some(IndexedDir {
            path: f.subject.clone(),
            device: r.device.name.clone(),
            inode: r.inode,
            large_dir: r.large_dir,
            owner: f.owner.clone(),
            root_fill: ratio(ix.root.count, ix.root.limit)?,
            node_fill: ix
                .node_levels
                .last()
                .and_then(|n| ratio(n.count_max, n.limit)),
            entries: ix.entries.estimate,
            entries_left: ix.headroom.entries_left,
            failing_share: ix.create_failure.failing_share,
            growth_per_second: None,
            seconds_to_full: None,
        })
    }
}

impl Output for HtreeOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The top-N directories: failing first, then the fullest.
    fn metrics(&self, sink: &mut Sink) {
        let worst = |d: &IndexedDir| d.root_fill.max(d.node_fill.unwrap_or(0.0));
        let mut dirs: Vec<&IndexedDir> = self.dirs.iter().collect();
        dirs.sort_by(|a, b| {
            b.failing_share
                .total_cmp(&a.failing_share)
                .then(worst(b).total_cmp(&worst(a)))
        });
        dirs.truncate(sink.top);
        for d in dirs {
            let mut labels = metric::labels(&[("device", &d.device), ("path", &d.path)]);
            labels.extend(metric::owner_labels(d.owner.as_ref()));
            labels.push(("large_dir".into(), d.large_dir.to_string()));
            sink.put("htree_root_fill_ratio", labels.clone(), d.root_fill);
            if let Some(n) = d.node_fill {
                sink.put("htree_node_fill_ratio", labels.clone(), n);
            }
            sink.put("htree_entries", labels.clone(), d.entries as f64);
            if let Some(left) = d.entries_left {
                sink.put("htree_entries_left", labels.clone(), left as f64);
            }
            if let Some(t) = d.seconds_to_full {
                sink.put("htree_seconds_to_full", labels.clone(), t);
            }
            sink.put("htree_failing_ratio", labels, d.failing_share);
        }
    }
}

/// A full index is a warning once fewer creates than this share of its entries are left.
const WARN_HEADROOM_SHARE: f64 = 0.25;

/// What is wrong with an index that could be read: leaves that could not be read or parsed, a dropped index
/// flag, names in the wrong leaf. Empty for a healthy index.
pub fn corruption(ix: &IndexReport) -> Vec<String> {
    let mut out = ix.problems.clone();
    let h = &ix.hash_check;
    if h.names_outside > 0 {
        out.push(format!(
            "{} of {} names in {} of {} leaves checked hash ({}) outside the range their index entry gives the \
             leaf, so lookups of them fail (see misfiled)",
            h.names_outside,
            h.names_checked,
            h.leaves_outside,
            h.leaves_checked,
            h.hash.unwrap_or("unknown"),
        ));
    }
    out
}

/// Each leaf with names outside its hash range: its block, range, counts and up to 3 of the names; then how many
/// more leaves there are.
fn misfiled(ix: &IndexReport) -> Vec<String> {
    let h = &ix.hash_check;
    let mut out: Vec<String> = h
        .leaves
        .iter()
        .map(|l| {
            format!(
                "block {} (hashes {:#010x} to {:#x}): {} of {} names outside: {}",
                l.block,
                l.lo,
                l.hi,
                l.names_outside,
                l.names,
                l.sample
                    .iter()
                    .map(|n| format!("'{}' hash {:#010x}", n.name, n.hash))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if h.leaves_outside > out.len() as u64 {
        out.push(format!(
            "and {} more leaves",
            h.leaves_outside - out.len() as u64
        ));
    }
    out
}

/// An index that could not be read at all because it is corrupt is a finding (critical, like any corruption);
/// any other error is something wonk could not see.
pub fn judge_error(ctx: &Context, path: &Path, e: &Ext4Error) -> Result<Finding, BlindSpot> {
    let shown = path.display().to_string();
    let Ext4Error::Corrupt { block, problem } = e else {
        return Err(BlindSpot::new("htree", shown, e.to_string()));
    };
    Ok(Finding {
        check: "htree",
        kind: "index-corrupt",
        severity: Severity::Critical,
        summary: format!(
            "{shown}: the directory index is corrupt: directory block {block}: {problem}; the kernel refuses \
             or ignores it (e2fsck -fD repairs it)"
        ),
        subject: shown.clone(),
        owner: owner(ctx, &shown),
        evidence: Vec::new(),
        advice: Vec::new(),
    }
    .with("block", block)
    .with("problem", problem.to_string()))
}

fn owner(ctx: &Context, path: &str) -> Option<crate::owner::Owner> {
    crate::owner::locate::who(ctx.owners, path)
        .ok()
        .and_then(|w| w.owner)
        .filter(|o| !o.is_empty())
}

/// How severe an index is, and why. A corrupt index (a leaf that does not read or parse, names in the wrong
/// leaf, an index the kernel dropped) is critical: lookups in it fail or scan every block, and creates can fail.
pub fn judge(ctx: &Context, r: &HtreeReport) -> Finding {
    let corrupt = r.index.as_ref().map(corruption).unwrap_or_default();
    let (kind, severity, summary) = match &r.index {
        Some(_) if !corrupt.is_empty() => (
            "index-corrupt",
            Severity::Critical,
            format!(
                "{}: the directory index is corrupt: {}{}",
                r.path,
                corrupt[0],
                if corrupt.len() > 1 {
                    format!(" (and {} more problems)", corrupt.len() - 1)
                } else {
                    String::new()
                }
            ),
        ),
        None => (
            "not-indexed",
            Severity::Info,
            format!(
                "{} has no htree index ({})",
                r.path,
                r.not_indexed.as_deref().unwrap_or("linear")
            ),
        ),
        Some(ix) => {
            let cf = &ix.create_failure;
            let left = ix.headroom.entries_left;
            let near = cf.at_max_levels
                && left.is_some_and(|l| {
                    (l as f64) < WARN_HEADROOM_SHARE * ix.entries.estimate.max(1) as f64
                });
            if cf.failing_share > 0.0 {
                (
                    "index-full",
                    Severity::Critical,
                    format!(
                        "{}: creates of {}-byte names fail with ENOSPC for {:.2}% of the hash space now ({} entries)",
                        r.path,
                        cf.name_len,
                        cf.failing_share * 100.0,
                        ix.entries.estimate
                    ),
                )
            } else if near {
                (
                    "index-filling",
                    Severity::Warning,
                    format!(
                        "{}: about {} creates left before the first ENOSPC ({} entries, index at its last level)",
                        r.path,
                        left.unwrap_or(0),
                        ix.entries.estimate
                    ),
                )
            } else {
                (
                    "index",
                    Severity::Info,
                    format!(
                        "{}: {} entries, index level {} of {}, {} creates left before the first ENOSPC",
                        r.path,
                        ix.entries.estimate,
                        ix.levels + 1,
                        ix.max_levels,
                        left.map_or("unknown".into(), |l| format!("about {l}"))
                    ),
                )
            }
        }
    };
    let path = r
        .overlay
        .as_ref()
        .map_or(r.path.clone(), |o| o.merged.clone());
    let owner = owner(ctx, &path);
    let mut f = Finding {
        check: "htree",
        kind,
        severity,
        summary,
        subject: r.path.clone(),
        owner,
        evidence: Vec::new(),
        advice: r.advice.clone(),
    }
    .with("device", format!("{} ({})", r.device.name, r.device.dev))
    .with("inode", r.inode)
    .with("dir_size", r.dir_size)
    .with("block_size", r.block_size)
    .with("metadata_csum", r.metadata_csum)
    .with("large_dir", r.large_dir);
    if let Some(o) = &r.overlay {
        f = f.with("overlay_path", &o.merged);
    }
    if !corrupt.is_empty() {
        f = f.with("corruption", &corrupt);
    }
    if let Some(ix) = r
        .index
        .as_ref()
        .filter(|ix| ix.hash_check.names_outside > 0)
    {
        f = f.with("misfiled", misfiled(ix));
    }
    if let Some(ix) = &r.index {
        f = f
            .with("hash", ix.hash)
            .with("levels", format!("{} of {}", ix.levels + 1, ix.max_levels))
            .with(
                "root",
                format!(
                    "{}/{}{}",
                    ix.root.count,
                    ix.root.limit,
                    if ix.root.full { " full" } else { "" }
                ),
            );
        for l in &ix.node_levels {
            f = f.with(
                &format!("level_{}", l.level),
                format!(
                    "{} nodes, count min/median/max {}/{}/{} of {}, {} full",
                    l.nodes, l.count_min, l.count_median, l.count_max, l.limit, l.full
                ),
            );
        }
        let e = &ix.entries;
        f = f.with("leaf_blocks", ix.leaf_blocks).with(
            "entries",
            if e.exact {
                format!("{} (every leaf read)", e.estimate)
            } else if !e.relative_std_error.is_finite() {
                format!(
                    "about {} (precision unknown: {} of {} leaves read)",
                    e.estimate, e.sampled_leaves, ix.leaf_blocks
                )
            } else {
                format!(
                    "about {} (±{:.1}%, from {} of {} leaves)",
                    e.estimate,
                    2.0 * e.relative_std_error * 100.0,
                    e.sampled_leaves,
                    ix.leaf_blocks
                )
            },
        );
        let cf = &ix.create_failure;
        f = f.with(
            "failing_now",
            format!(
                "{:.3}% of the hash space for {}-byte names ({}; {})",
                cf.failing_share * 100.0,
                cf.name_len,
                cf.name_len_source,
                cf.method
            ),
        );
        let h = &ix.headroom;
        f = f.with(
            "entries_left",
            match (h.entries_left, h.entries_left_low, h.entries_left_high) {
                (Some(l), Some(lo), Some(hi)) => {
                    format!("about {l} (8 in 10: {lo} to {hi}); model: {}", h.model)
                }
                (Some(l), _, _) => format!("about {l}; model: {}", h.model),
                _ => format!("unknown; model: {}", h.model),
            },
        );
    }
    f.with("report", r)
}

/// How `--scan` walks.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Directories smaller than this are not indexed deep enough to matter; they are not read.
    pub min_dir_size: u64,
    pub budget: Option<Duration>,
    /// Show progress on stderr.
    pub progress: bool,
    /// Report only findings at this severity or above.
    pub min_severity: Severity,
}

/// Finds the directories at risk on the filesystem mounted at `mount` (a node path).
pub fn scan_mount(ctx: &Context, mount: &Path, opts: &ScanOptions) -> CheckOutput {
    let mut dirs = Vec::new();
    let mut out = scan_one(ctx, mount, opts, &mut dirs);
    out.output = Some(Box::new(HtreeOutput { dirs }));
    out
}

/// [`scan_mount`], the indexed directories it reports added to `dirs`.
fn scan_one(
    ctx: &Context,
    mount: &Path,
    opts: &ScanOptions,
    dirs: &mut Vec<IndexedDir>,
) -> CheckOutput {
    let mut out = CheckOutput::default();
    let start = Instant::now();
    let top = ctx.host.path(mount);
    let (dev, top_size) = match std::fs::metadata(&top) {
        Ok(m) => (m.dev(), m.size()),
        Err(e) => {
            out.failed = Some(format!("cannot read {}: {e}", mount.display()));
            return out;
        }
    };
    let mut walk = walk_dirs(&top, dev, opts, start);
    // The walk judges each directory from its parent; the top has none.
    if top_size >= opts.min_dir_size {
        walk.candidates.insert(0, top.clone());
    }
    let mut analysed = 0u64;
    for cand in &walk.candidates {
        if opts.budget.is_some_and(|b| start.elapsed() >= b) {
            out.blind_spots.push(BlindSpot::new(
                "htree",
                format!(
                    "{} candidate directories under {}",
                    walk.candidates.len() as u64 - analysed,
                    mount.display()
                ),
                "the time budget ran out before their index was read",
            ));
            break;
        }
        let node_path = ctx.host.to_node_path(cand).unwrap_or_else(|| cand.clone());
        match htree::analyze(ctx.host, &node_path, None) {
            Ok(r) => {
                let f = judge(ctx, &r);
                if f.severity >= opts.min_severity {
                    dirs.extend(IndexedDir::of(&r, &f));
                    out.findings.push(f);
                }
            }
            Err(e) => match judge_error(ctx, &node_path, &e) {
                Ok(f) => out.findings.push(f),
                Err(b) => out.blind_spots.push(b),
            },
        }
        analysed += 1;
    }
    if walk.unreadable > 0 {
        let shown: Vec<String> = walk
            .unreadable_sample
            .iter()
            .map(|(p, why)| {
                let p = ctx.host.to_node_path(p).unwrap_or_else(|| p.clone());
                format!("{} ({why})", p.display())
            })
            .collect();
        out.blind_spots.push(BlindSpot::new(
            "htree",
            format!(
                "{} directories under {} that could not be read",
                walk.unreadable,
                mount.display()
            ),
            format!(
                "neither they nor what is below them were judged: {}{}",
                shown.join("; "),
                if walk.unreadable > shown.len() as u64 {
                    format!("; and {} more", walk.unreadable - shown.len() as u64)
                } else {
                    String::new()
                }
            ),
        ));
    }
    if walk.stopped {
        out.blind_spots.push(BlindSpot::new(
            "htree",
            format!("part of {}", mount.display()),
            format!(
                "the time budget ran out after walking {} directories",
                walk.dirs
            ),
        ));
    }
    if opts.progress {
        eprintln!();
    }
    out.stats = vec![
        ("directories_walked".into(), walk.dirs),
        ("candidates".into(), walk.candidates.len() as u64),
        ("analysed".into(), analysed),
        ("unreadable_directories".into(), walk.unreadable),
        ("other_filesystems".into(), walk.other_fs),
    ];
    out
}

struct Walk {
    dirs: u64,
    unreadable: u64,
    unreadable_sample: Vec<(PathBuf, String)>,
    other_fs: u64,
    candidates: Vec<PathBuf>,
    stopped: bool,
}

/// Directories only, on one device, in parallel; each subdirectory is statted once, from its parent's handle.
fn walk_dirs(top: &Path, dev: u64, opts: &ScanOptions, start: Instant) -> Walk {
    use crate::host::walk::{self, DirVisit};
    use rustix::fs::{AtFlags, FileType};
    let candidates = std::sync::Mutex::new(Vec::new());
    let walked = std::sync::atomic::AtomicU64::new(0);
    let last = std::sync::Mutex::new(Instant::now());
    let visit = |v: &DirVisit| {
        let n = walked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        for e in v.entries.iter().filter(|e| e.kind == FileType::Directory) {
            if let Ok(st) = rustix::fs::statat(v.fd, e.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            {
                // A mount point of another filesystem is not this filesystem's directory.
                if st.st_size as u64 >= opts.min_dir_size && st.st_dev == dev {
                    candidates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(v.path().join(e.name));
                }
            }
        }
        if opts.progress {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if l.elapsed() > Duration::from_millis(200) {
                let c = candidates.lock().map_or(0, |c| c.len());
                eprint!("\rwalked {n} directories, {c} candidates");
                *l = Instant::now();
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let st = walk::walk(top, threads, opts.budget.map(|b| start + b), &visit);
    let mut candidates = candidates.into_inner().unwrap_or_else(|e| e.into_inner());
    candidates.sort();
    Walk {
        dirs: st.dirs,
        unreadable: st.unreadable,
        unreadable_sample: st.unreadable_sample,
        other_fs: st.other_fs,
        candidates,
        stopped: st.stopped,
    }
}

/// The check `wonk scan` runs: the filesystems of containerd's root and kubelet's root, within a budget.
pub struct HtreeRisk {
    pub budget: Duration,
    /// Report directories at this severity or above (the agent keeps every indexed one, to export its fill).
    pub min_severity: Severity,
    /// The agent's: each directory's entries at its last runs, for the growth rate and the time to full.
    pub history: Option<Mutex<History>>,
}

impl Default for HtreeRisk {
    fn default() -> HtreeRisk {
        HtreeRisk {
            budget: Duration::from_secs(10),
            min_severity: Severity::Warning,
            history: None,
        }
    }
}

/// Samples kept per directory, and directories kept: a directory not seen in a run is forgotten.
const HISTORY_SAMPLES: usize = 8;
const HISTORY_DIRS: usize = 4096;
/// A growing index expected to be full sooner than this is a warning.
const WARN_SECONDS_TO_FULL: f64 = 7.0 * 86_400.0;

/// Each indexed directory's entries at the agent's last runs, keyed by (device, inode): a path can be renamed
/// or reused, an inode on its device cannot while the directory lives. Bounded in directories and samples.
#[derive(Debug, Default)]
pub struct History {
    dirs: HashMap<(String, u64), VecDeque<(Instant, u64)>>,
}

impl History {
    /// Adds this run's entries of each directory at `now`, forgets the directories not seen, and sets each
    /// directory's growth since its oldest sample and, when it grows, its time to full; the finding of a
    /// growing directory (same subject) says it, and is a warning when that is less than a week away.
    pub fn record(&mut self, now: Instant, dirs: &mut [IndexedDir], findings: &mut [Finding]) {
        let mut kept = HashMap::with_capacity(dirs.len().min(HISTORY_DIRS));
        for d in dirs.iter_mut() {
            let key = (d.device.clone(), d.inode);
            let mut h = self.dirs.remove(&key).unwrap_or_default();
            if kept.len() >= HISTORY_DIRS {
                continue;
            }
            if let Some(&(then, old)) = h.front() {
                let secs = now.saturating_duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    let rate = (d.entries as f64 - old as f64) / secs;
                    d.growth_per_second = Some(rate);
                    d.seconds_to_full = d
                        .entries_left
                        .filter(|_| rate > 0.0)
                        .map(|left| left as f64 / rate);
                    if let Some(f) = findings.iter_mut().find(|f| f.subject == d.path) {
                        grown(f, d, old, secs);
                    }
                }
            }
            h.push_back((now, d.entries));
            while h.len() > HISTORY_SAMPLES {
                h.pop_front();
            }
            kept.insert(key, h);
        }
        self.dirs = kept;
    }
}

/// Adds a directory's growth to its finding.
fn grown(f: &mut Finding, d: &IndexedDir, then: u64, secs: f64) {
    let Some(rate) = d.growth_per_second else {
        return;
    };
    f.evidence.push(("entries_then".into(), Value::from(then)));
    let mut ev = |k: &str, v: f64| f.evidence.push((k.to_string(), Value::from(v)));
    ev("seconds_between", secs);
    ev("growth_per_hour", rate * 3600.0);
    let Some(t) = d.seconds_to_full else {
        return;
    };
    ev("seconds_to_full", t);
    f.summary
        .push_str(&format!("; at the current rate, {}", about(t)));
    if t < WARN_SECONDS_TO_FULL && f.severity < Severity::Warning {
        f.severity = Severity::Warning;
        f.kind = "index-filling";
    }
}

/// A duration for people: "about 9 days", "about 5 hours", "about 40 minutes", "about 30 seconds".
pub fn about(secs: f64) -> String {
    let (n, unit) = match secs {
        s if s >= 2.0 * 86_400.0 => (s / 86_400.0, "days"),
        s if s >= 2.0 * 3600.0 => (s / 3600.0, "hours"),
        s if s >= 120.0 => (s / 60.0, "minutes"),
        s => (s, "seconds"),
    };
    format!("about {} {unit}", n.round() as u64)
}

impl Check for HtreeRisk {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut dirs = Vec::new();
        let mut roots: Vec<PathBuf> = ctx
            .owners
            .instances()
            .iter()
            .map(|i| i.root.clone())
            .collect();
        roots.push(ctx.owners.kubelet_root.clone());
        let mut seen_dev = std::collections::HashSet::new();
        let start = Instant::now();
        let mut stats: Vec<(String, u64)> = Vec::new();
        for root in roots {
            let Ok(md) = std::fs::metadata(ctx.host.path(&root)) else {
                continue;
            };
            if !seen_dev.insert(md.dev()) || !is_ext4(ctx.host, &root) {
                continue;
            }
            let left = self.budget.saturating_sub(start.elapsed());
            let opts = ScanOptions {
                min_dir_size: 256 << 10,
                budget: Some(left),
                progress: false,
                min_severity: self.min_severity,
            };
            let o = scan_one(ctx, &root, &opts, &mut dirs);
            out.findings.extend(o.findings);
            out.blind_spots.extend(o.blind_spots);
            for (k, v) in o.stats {
                match stats.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, t)) => *t += v,
                    None => stats.push((k, v)),
                }
            }
        }
        if let Some(h) = &self.history {
            h.lock().unwrap_or_else(|e| e.into_inner()).record(
                Instant::now(),
                &mut dirs,
                &mut out.findings,
            );
        }
        out.stats = stats;
        out.output = Some(Box::new(HtreeOutput { dirs }));
        out
    }
}

fn is_ext4(host: &Host, path: &Path) -> bool {
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 and i32 or u32 elsewhere.
    rustix::fs::statfs(host.path(path)).is_ok_and(|s| s.f_type as i64 == 0xEF53)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(inode: u64, entries: u64) -> IndexedDir {
        IndexedDir {
            path: format!("/d{inode}"),
            device: "loop0".into(),
            inode,
            large_dir: false,
            owner: None,
            root_fill: 0.5,
            node_fill: None,
            entries,
            entries_left: Some(1000),
            failing_share: 0.0,
            growth_per_second: None,
            seconds_to_full: None,
        }
    }

    #[test]
    fn about_in_the_largest_fitting_unit() {
        assert_eq!(about(9.0 * 86_400.0 + 100.0), "about 9 days");
        assert_eq!(about(5.0 * 3600.0), "about 5 hours");
        assert_eq!(about(40.0 * 60.0), "about 40 minutes");
        assert_eq!(about(30.0), "about 30 seconds");
    }

    #[test]
    fn history_rates_from_the_oldest_sample_and_forgets_what_it_no_longer_sees() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(t0, &mut [dir(1, 100), dir(2, 500)], &mut []);
        let mut now = [dir(1, 200)];
        h.record(t0 + Duration::from_secs(10), &mut now, &mut []);
        assert_eq!(now[0].growth_per_second, Some(10.0));
        assert_eq!(now[0].seconds_to_full, Some(100.0));
        // Directory 2 was not seen: forgotten, so it starts again without a rate.
        let mut again = [dir(2, 900)];
        h.record(t0 + Duration::from_secs(20), &mut again, &mut []);
        assert_eq!(again[0].growth_per_second, None);
        // A shrinking directory has a rate but no time to full.
        let mut shrunk = [dir(2, 800)];
        h.record(t0 + Duration::from_secs(30), &mut shrunk, &mut []);
        assert_eq!(shrunk[0].growth_per_second, Some(-10.0));
        assert_eq!(shrunk[0].seconds_to_full, None);
        // Samples are bounded: the rate is over the last HISTORY_SAMPLES runs.
        for i in 0..20u64 {
            h.record(
                t0 + Duration::from_secs(40 + i),
                &mut [dir(2, 1000 + i)],
                &mut [],
            );
        }
        assert_eq!(h.dirs[&("loop0".to_string(), 2)].len(), HISTORY_SAMPLES);
    }
}
