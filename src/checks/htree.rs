//! Directories whose ext4 htree index is full or filling: the seed's first incident, seen weeks ahead.
//!
//! [`judge`] turns one [`HtreeReport`] (from [`crate::ext4::analyze`]) into a finding with its owner.
//! [`scan_mount`] finds the directories at risk on one filesystem: a walk of directories only (d_type, no stat
//! of regular files) that stays on that filesystem, a cheap prefilter on directory size, then index reads for
//! the candidates. [`HtreeRisk`] is the check `wonk scan` runs over the filesystems that hold containerd's and
//! kubelet's directories, within a time budget.

use super::{Check, Context};
use crate::ext4::htree::{self, HtreeReport};
use crate::finding::{BlindSpot, CheckOutput, Finding, Severity};
use crate::host::Host;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A full index is a warning once fewer creates than this share of its entries are left.
const WARN_HEADROOM_SHARE: f64 = 0.25;

/// How severe an index is, and why.
pub fn judge(ctx: &Context, r: &HtreeReport) -> Finding {
    let (kind, severity, summary) = match &r.index {
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
    let owner = crate::who::who(ctx.owners, &path)
        .ok()
        .and_then(|w| w.owner)
        .filter(|o| !o.is_empty());
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
                    out.findings.push(f);
                }
            }
            Err(e) => out.blind_spots.push(BlindSpot::new(
                "htree",
                node_path.display().to_string(),
                e.to_string(),
            )),
        }
        analysed += 1;
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
    ];
    out
}

struct Walk {
    dirs: u64,
    unreadable: u64,
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
        candidates,
        stopped: st.stopped,
    }
}

/// The check `wonk scan` runs: the filesystems of containerd's root and kubelet's root, within a budget.
pub struct HtreeRisk {
    pub budget: Duration,
    /// Report directories at this severity or above (the agent keeps every indexed one, to export its fill).
    pub min_severity: Severity,
}

impl Default for HtreeRisk {
    fn default() -> HtreeRisk {
        HtreeRisk {
            budget: Duration::from_secs(10),
            min_severity: Severity::Warning,
        }
    }
}

impl Check for HtreeRisk {
    fn name(&self) -> &'static str {
        "htree"
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
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
            let o = scan_mount(ctx, &root, &opts);
            out.findings.extend(o.findings);
            out.blind_spots.extend(o.blind_spots);
            for (k, v) in o.stats {
                match stats.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, t)) => *t += v,
                    None => stats.push((k, v)),
                }
            }
        }
        out.stats = stats;
        out
    }
}

fn is_ext4(host: &Host, path: &Path) -> bool {
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 and i32 or u32 elsewhere.
    rustix::fs::statfs(host.path(path)).is_ok_and(|s| s.f_type as i64 == 0xEF53)
}
