//! The agent's metric families (prefix `wonk_`), filled from each check's [`CheckOutput`]. Gauges that describe
//! the node now (htree fill, ghost mounts, shims, D-state threads, pod layers) are rebuilt on every run of their
//! check, so a pod's series disappear when the pod goes. Counters (kernel-log events, check errors) only grow.
//! Label cardinality is bounded: htree directories and layer pods are cut to the top N.

use crate::finding::{CheckOutput, Finding, Severity};
use crate::owner::Owner;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// A label set: (name, value) pairs in a fixed order.
pub type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// Every family the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Held while a family is cleared and refilled, and while the registry is encoded, so that a scrape never
    /// sees a half-rebuilt family.
    lock: Mutex<()>,
    top: usize,
    htree_root_fill: Family<Labels, FGauge>,
    htree_node_fill: Family<Labels, FGauge>,
    htree_entries: Family<Labels, FGauge>,
    htree_entries_left: Family<Labels, FGauge>,
    htree_failing: Family<Labels, FGauge>,
    ghost_mounts: Family<Labels, Gauge>,
    shims: Family<Labels, Gauge>,
    shims_leaked_rss: Gauge,
    shims_leaked_threads: Gauge,
    kmsg_events: Family<Labels, Counter>,
    kmsg_records: Counter,
    kmsg_lost: Counter,
    dstate: Family<Labels, Gauge>,
    pod_files: Family<Labels, Gauge>,
    pod_bytes: Family<Labels, Gauge>,
    findings: Family<Labels, Gauge>,
    blind_spots: Family<Labels, Gauge>,
    check_duration: Family<Labels, FGauge>,
    check_errors: Family<Labels, Counter>,
    check_runs: Family<Labels, Counter>,
    check_last_success: Family<Labels, FGauge>,
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// namespace, pod and container of an owner; empty strings when unknown (not a pod's).
fn owner_labels(o: Option<&Owner>) -> Labels {
    let g = |f: fn(&Owner) -> &Option<String>| o.and_then(|o| f(o).clone()).unwrap_or_default();
    vec![
        ("namespace".into(), g(|o| &o.namespace)),
        ("pod".into(), g(|o| &o.pod)),
        ("container".into(), g(|o| &o.container)),
    ]
}

fn ev<'a>(f: &'a Finding, key: &str) -> Option<&'a Value> {
    f.evidence.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    pub fn new(top: usize) -> Metrics {
        let mut r = Registry::with_prefix("wonk");
        macro_rules! reg {
            ($name:expr, $help:expr, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let info: Family<Labels, Gauge> = Family::default();
        info.get_or_create(&l(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        r.register("build_info", "wonk's version; always 1", info);
        Metrics {
            lock: Mutex::new(()),
            top,
            htree_root_fill: reg!(
                "htree_root_fill_ratio",
                "Fill of an ext4 directory's htree root block (count/limit), for the top-N directories at risk",
                Family::default()
            ),
            htree_node_fill: reg!(
                "htree_node_fill_ratio",
                "Fill of the fullest index node at the directory's last index level (count/limit)",
                Family::default()
            ),
            htree_entries: reg!(
                "htree_entries",
                "Estimated entries in the directory",
                Family::default()
            ),
            htree_entries_left: reg!(
                "htree_entries_left",
                "Estimated creates left before the first ENOSPC from a full index",
                Family::default()
            ),
            htree_failing: reg!(
                "htree_failing_ratio",
                "Share of the hash space for which a create fails with ENOSPC now",
                Family::default()
            ),
            ghost_mounts: reg!(
                "ghost_mounts",
                "Stale bind mounts (kind: deleted, replaced, source-gone) by owner",
                Family::default()
            ),
            shims: reg!(
                "shims",
                "containerd shims by class (healthy, leaked, orphaned-workload, unknown)",
                Family::default()
            ),
            shims_leaked_rss: reg!(
                "shims_leaked_resident_bytes",
                "Resident memory of the leaked shims, summed",
                Gauge::default()
            ),
            shims_leaked_threads: reg!(
                "shims_leaked_threads",
                "Threads of the leaked shims, summed",
                Gauge::default()
            ),
            kmsg_events: reg!(
                "kmsg_events",
                "Kernel-log events by reason (htree-full, oom-kill, task-hung, ...) and owner, counting every folded message",
                Family::default()
            ),
            kmsg_records: reg!(
                "kmsg_records_read",
                "Kernel-log records read",
                Counter::default()
            ),
            kmsg_lost: reg!(
                "kmsg_records_lost",
                "Kernel-log records lost: overwritten by the kernel before wonk read them, or dropped because wonk's queue of records read was full",
                Counter::default()
            ),
            dstate: reg!(
                "dstate_threads",
                "Threads in uninterruptible sleep (D) at the last sample, by owner",
                Family::default()
            ),
            pod_files: reg!(
                "pod_writable_files",
                "Files in a pod's writable layers and emptyDirs (what deleting it will unlink), top-N pods",
                Family::default()
            ),
            pod_bytes: reg!(
                "pod_writable_bytes",
                "Bytes in a pod's writable layers and emptyDirs, top-N pods",
                Family::default()
            ),
            findings: reg!(
                "findings",
                "Findings of the last run of each check, by severity",
                Family::default()
            ),
            blind_spots: reg!(
                "blind_spots",
                "What the last run of each check could not see",
                Family::default()
            ),
            check_duration: reg!(
                "check_duration_seconds",
                "Duration of the last run of each check",
                Family::default()
            ),
            check_errors: reg!(
                "check_errors",
                "Runs of each check that failed or panicked",
                Family::default()
            ),
            check_runs: reg!("check_runs", "Runs of each check", Family::default()),
            check_last_success: reg!(
                "check_last_success_timestamp_seconds",
                "When each check last finished without failing (Unix time)",
                Family::default()
            ),
            registry: r,
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry in the OpenMetrics text format.
    pub fn openmetrics(&self) -> String {
        let _g = self.guard();
        let mut s = String::with_capacity(8192);
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// The registry in the classic Prometheus text format (0.0.4), for node_exporter's textfile collector and
    /// scrapers that do not ask for OpenMetrics: counters' HELP/TYPE name the `_total` series, no UNIT or EOF.
    pub fn text(&self) -> String {
        to_classic(&self.openmetrics())
    }

    /// Records one run of a check: its duration, outcome and, when it did not fail, its findings.
    pub fn record_run(
        &self,
        check: &str,
        duration: std::time::Duration,
        out: Result<&CheckOutput, &str>,
    ) {
        let c = l(&[("check", check)]);
        let _g = self.guard();
        self.check_runs.get_or_create(&c).inc();
        self.check_duration
            .get_or_create(&c)
            .set(duration.as_secs_f64());
        match out {
            Ok(o) if o.failed.is_none() => {
                self.check_last_success.get_or_create(&c).set(now_secs());
                self.blind_spots
                    .get_or_create(&c)
                    .set(o.blind_spots.len() as i64);
                for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
                    let n = o.findings.iter().filter(|f| f.severity == sev).count();
                    let s = format!("{sev:?}").to_lowercase();
                    self.findings
                        .get_or_create(&l(&[("check", check), ("severity", &s)]))
                        .set(n as i64);
                }
            }
            _ => {
                self.check_errors.get_or_create(&c).inc();
            }
        }
    }

    /// Makes the error counter of a check exist (at 0) before its first failure, so that rate() works.
    pub fn declare(&self, check: &str) {
        let c = l(&[("check", check)]);
        let _g = self.guard();
        let _ = self.check_errors.get_or_create(&c);
        let _ = self.check_runs.get_or_create(&c);
    }

    pub fn ghosts(&self, out: &CheckOutput) {
        let mut counts: BTreeMap<Labels, i64> = BTreeMap::new();
        for f in &out.findings {
            let mut k = owner_labels(f.owner.as_ref());
            k.push(("kind".into(), f.kind.to_string()));
            *counts.entry(k).or_default() += 1;
        }
        let _g = self.guard();
        self.ghost_mounts.clear();
        for (k, n) in counts {
            self.ghost_mounts.get_or_create(&k).set(n);
        }
    }

    pub fn shims(&self, out: &CheckOutput) {
        let stat = |name: &str| {
            out.stats
                .iter()
                .find(|(k, _)| k == name)
                .map_or(0, |(_, v)| *v as i64)
        };
        let _g = self.guard();
        self.shims.clear();
        for (class, key) in [
            ("healthy", "healthy"),
            ("leaked", "leaked"),
            ("orphaned-workload", "orphaned_workload"),
            ("unknown", "unknown"),
        ] {
            self.shims
                .get_or_create(&l(&[("class", class)]))
                .set(stat(key));
        }
        self.shims_leaked_rss.set(stat("leaked_rss_kib") * 1024);
        self.shims_leaked_threads.set(stat("leaked_threads"));
    }

    /// htree findings from `--scan`-style runs; only findings with an index carry fill figures.
    pub fn htree(&self, out: &CheckOutput) {
        struct Dir {
            labels: Labels,
            root: f64,
            node: Option<f64>,
            entries: f64,
            left: Option<f64>,
            failing: f64,
        }
        let mut dirs: Vec<Dir> = Vec::new();
        for f in &out.findings {
            let Some(rep) = ev(f, "report") else { continue };
            let ix = &rep["index"];
            if ix.is_null() {
                continue;
            }
            let ratio = |count: &Value, limit: &Value| match (count.as_f64(), limit.as_f64()) {
                (Some(c), Some(lim)) if lim > 0.0 => Some(c / lim),
                _ => None,
            };
            let Some(root) = ratio(&ix["root"]["count"], &ix["root"]["limit"]) else {
                continue;
            };
            let node = ix["node_levels"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|n| ratio(&n["count_max"], &n["limit"]));
            let mut labels = vec![
                (
                    "device".to_string(),
                    rep["device"]["name"].as_str().unwrap_or("").to_string(),
                ),
                ("path".to_string(), f.subject.clone()),
            ];
            labels.extend(owner_labels(f.owner.as_ref()));
            labels.push((
                "large_dir".into(),
                rep["large_dir"].as_bool().unwrap_or(false).to_string(),
            ));
            dirs.push(Dir {
                labels,
                root,
                node,
                entries: ix["entries"]["estimate"].as_f64().unwrap_or(0.0),
                left: ix["headroom"]["entries_left"].as_f64(),
                failing: ix["create_failure"]["failing_share"]
                    .as_f64()
                    .unwrap_or(0.0),
            });
        }
        let worst = |d: &Dir| d.root.max(d.node.unwrap_or(0.0));
        dirs.sort_by(|a, b| {
            b.failing
                .total_cmp(&a.failing)
                .then(worst(b).total_cmp(&worst(a)))
        });
        dirs.truncate(self.top);
        let _g = self.guard();
        for fam in [
            &self.htree_root_fill,
            &self.htree_node_fill,
            &self.htree_entries,
            &self.htree_entries_left,
            &self.htree_failing,
        ] {
            fam.clear();
        }
        for d in dirs {
            self.htree_root_fill.get_or_create(&d.labels).set(d.root);
            if let Some(n) = d.node {
                self.htree_node_fill.get_or_create(&d.labels).set(n);
            }
            self.htree_entries.get_or_create(&d.labels).set(d.entries);
            if let Some(left) = d.left {
                self.htree_entries_left.get_or_create(&d.labels).set(left);
            }
            self.htree_failing.get_or_create(&d.labels).set(d.failing);
        }
    }

    /// Per-pod delete cost from the layers check (run with `all`), top N pods by files.
    pub fn layers(&self, out: &CheckOutput) {
        let mut pods: Vec<(Labels, i64, i64)> = out
            .findings
            .iter()
            .map(|f| {
                let mut k = owner_labels(f.owner.as_ref());
                k.retain(|(n, _)| n != "container");
                let num = |key| ev(f, key).and_then(Value::as_i64).unwrap_or(0);
                (k, num("files"), num("bytes"))
            })
            .collect();
        pods.sort_by_key(|p| std::cmp::Reverse(p.1));
        pods.truncate(self.top);
        let _g = self.guard();
        self.pod_files.clear();
        self.pod_bytes.clear();
        for (k, files, bytes) in pods {
            self.pod_files.get_or_create(&k).set(files);
            self.pod_bytes.get_or_create(&k).set(bytes);
        }
    }

    /// One kernel-log finding, as it settles: its `count` folded messages add to the counter of its reason.
    pub fn kmsg_event(&self, f: &Finding) {
        let n = ev(f, "count").and_then(Value::as_u64).unwrap_or(1);
        let mut k = vec![("reason".to_string(), f.kind.to_string())];
        k.extend(owner_labels(f.owner.as_ref()));
        let _g = self.guard();
        self.kmsg_events.get_or_create(&k).inc_by(n);
    }

    /// Kernel-log records read, and lost (overwritten before wonk read them, or dropped from a full queue), since
    /// the last call.
    pub fn kmsg_read(&self, records: u64, lost: u64) {
        let _g = self.guard();
        self.kmsg_records.inc_by(records);
        self.kmsg_lost.inc_by(lost);
    }

    /// D-state threads by owner, from one sample.
    pub fn dstate(&self, counts: &BTreeMap<Labels, i64>) {
        let _g = self.guard();
        self.dstate.clear();
        for (k, n) in counts {
            self.dstate.get_or_create(k).set(*n);
        }
    }
}

/// OpenMetrics text to the classic text format: a counter family `x` is announced as `x_total`; `# UNIT` and
/// `# EOF` go.
pub fn to_classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_in_both_formats() {
        let m = Metrics::new(20);
        m.declare("ghosts");
        let om = m.openmetrics();
        assert!(om.contains("# TYPE wonk_check_errors counter"), "{om}");
        assert!(
            om.contains("wonk_check_errors_total{check=\"ghosts\"} 0"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let t = m.text();
        assert!(t.contains("# TYPE wonk_check_errors_total counter"), "{t}");
        assert!(t.contains("# HELP wonk_check_errors_total Runs"), "{t}");
        assert!(!t.contains("# EOF"));
        assert!(t.contains("wonk_build_info{version="), "{t}");
    }
}
