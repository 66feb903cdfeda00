//! The agent's metric families (prefix `wonk_`): every check's own families, declared in its `checks::Unit` and
//! filled from its typed output through a [`Sink`], and the agent's own (runs, errors, durations, findings and
//! blind spots per check, and `wonk_finding`, one info series per current finding, whatever the check). A
//! check's gauges are rebuilt on every run of the check, so a pod's series disappear when the pod goes; counters
//! only grow, and have bounded labels. The standard `process_*` families describe the agent itself.

use crate::checks::{self, Unit};
use crate::finding::{CheckOutput, Finding, Severity};
use crate::metric::{labels as l, owner_labels, Kind, Labels, Sink};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

type FGauge = Gauge<f64, AtomicU64>;

/// How many findings of one check's run are exported as `wonk_finding` series, the most severe first; the rest
/// are counted in `wonk_finding_series_dropped_total`.
pub const FINDING_SERIES_PER_CHECK: usize = 100;
/// A finding's subject (a path) is cut to this many bytes in its label.
pub const SUBJECT_LABEL_BYTES: usize = 512;

/// One check family, as registered.
enum Fam {
    Gauge(Family<Labels, FGauge>),
    Counter(Family<Labels, Counter>),
}

/// Every family the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Held while a family is cleared and refilled, and while the registry is encoded, so that a scrape never
    /// sees a half-rebuilt family. It holds the `wonk_finding` label sets each check exports now.
    lock: Mutex<HashMap<String, Vec<Labels>>>,
    top: usize,
    /// The checks' own families, by name.
    families: HashMap<&'static str, Fam>,
    findings: Family<Labels, Gauge>,
    finding: Family<Labels, Gauge>,
    finding_dropped: Family<Labels, Counter>,
    blind_spots: Family<Labels, Gauge>,
    check_duration: Family<Labels, FGauge>,
    check_errors: Family<Labels, Counter>,
    check_runs: Family<Labels, Counter>,
    check_last_success: Family<Labels, FGauge>,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// Every check's families from the registry, and the agent's own.
    pub fn new(top: usize) -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(Process::start()));
        let r = root.sub_registry_with_prefix("wonk");
        macro_rules! reg {
            ($name:expr, $help:expr, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let info: Family<Labels, Gauge> = Family::default();
        info.get_or_create(&l(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", env!("WONK_GIT_REVISION")),
        ]))
        .set(1);
        r.register(
            "build_info",
            "wonk's version and the git revision it was built from (unknown when built outside git); always 1",
            info,
        );
        let mut families = HashMap::new();
        for f in checks::registry().iter().flat_map(|u| u.metrics) {
            let fam = match f.kind {
                Kind::Gauge => Fam::Gauge(reg!(f.name, f.help, Family::default())),
                Kind::Counter => Fam::Counter(reg!(f.name, f.help, Family::default())),
            };
            families.insert(f.name, fam);
        }
        Metrics {
            lock: Mutex::new(HashMap::new()),
            top,
            families,
            findings: reg!(
                "findings",
                "Findings of the last run of each check, by severity",
                Family::default()
            ),
            finding: reg!(
                "finding",
                "One series per current finding (at most 100 per check, the most severe first): its check, kind, \
                 severity, subject (a path, a pid, a device) and owner; always 1",
                Family::default()
            ),
            finding_dropped: reg!(
                "finding_series_dropped",
                "Findings not exported as wonk_finding because their check's run had more than 100, summed over \
                 runs",
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
            registry: root,
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Labels>>> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty sink for a check's samples.
    pub fn sink(&self) -> Sink {
        Sink::new(self.top)
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

    /// Records one run of a check: its duration, outcome and, when it did not fail, its findings, which replace
    /// the check's `wonk_finding` series. A failed run leaves the last findings in place (their age shows in
    /// `wonk_check_last_success_timestamp_seconds`).
    pub fn record_run(
        &self,
        check: &str,
        duration: std::time::Duration,
        out: Result<&CheckOutput, &str>,
    ) {
        let c = l(&[("check", check)]);
        let mut exported = self.guard();
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
                for old in exported.remove(check).unwrap_or_default() {
                    self.finding.remove(&old);
                }
                self.export_findings(&mut exported, check, &o.findings);
            }
            _ => {
                self.check_errors.get_or_create(&c).inc();
            }
        }
    }

    /// Adds findings to a check's `wonk_finding` series as they come (the kernel log's), until its next
    /// [`Metrics::record_run`] replaces them; the cap counts what is already exported.
    pub fn add_findings(&self, check: &str, findings: &[Finding]) {
        let mut exported = self.guard();
        self.export_findings(&mut exported, check, findings);
    }

    fn export_findings(
        &self,
        exported: &mut HashMap<String, Vec<Labels>>,
        check: &str,
        findings: &[Finding],
    ) {
        let mine = exported.entry(check.to_string()).or_default();
        let mut sorted: Vec<&Finding> = findings.iter().collect();
        sorted.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        let mut dropped = 0u64;
        for f in sorted {
            let labels = finding_labels(check, f);
            if mine.contains(&labels) {
                continue;
            }
            if mine.len() >= FINDING_SERIES_PER_CHECK {
                dropped += 1;
                continue;
            }
            self.finding.get_or_create(&labels).set(1);
            mine.push(labels);
        }
        self.finding_dropped
            .get_or_create(&l(&[("check", check)]))
            .inc_by(dropped);
    }

    /// Makes the error counter of a check exist (at 0) before its first failure, so that rate() works.
    pub fn declare(&self, check: &str) {
        let c = l(&[("check", check)]);
        let _g = self.guard();
        let _ = self.check_errors.get_or_create(&c);
        let _ = self.check_runs.get_or_create(&c);
        let _ = self.finding_dropped.get_or_create(&c);
    }

    /// A run's samples for `unit`'s families: its gauges are rebuilt from them, its counters grow by them.
    pub fn apply(&self, unit: &Unit, sink: Sink) {
        let _g = self.guard();
        for f in unit.metrics {
            if let Some(Fam::Gauge(g)) = self.families.get(f.name) {
                g.clear();
            }
        }
        self.add(unit, sink);
    }

    /// Like [`Metrics::apply`], but gauges not in `sink` keep their values: for counters fed as events come.
    pub fn add_events(&self, unit: &Unit, sink: Sink) {
        let _g = self.guard();
        self.add(unit, sink);
    }

    fn add(&self, unit: &Unit, sink: Sink) {
        for s in sink.samples {
            // A check may only fill the families it declared.
            if !unit.metrics.iter().any(|f| f.name == s.family) {
                tracing::debug!(check = unit.name, family = s.family, "undeclared family");
                continue;
            }
            match self.families.get(s.family) {
                Some(Fam::Gauge(g)) => {
                    g.get_or_create(&s.labels).set(s.value);
                }
                Some(Fam::Counter(c)) => {
                    c.get_or_create(&s.labels).inc_by(s.value.max(0.0) as u64);
                }
                None => {}
            }
        }
    }
}

/// `wonk_finding`'s labels for one finding.
fn finding_labels(check: &str, f: &Finding) -> Labels {
    let mut v = l(&[
        ("check", check),
        ("kind", f.kind),
        ("severity", &format!("{:?}", f.severity).to_lowercase()),
        (
            "subject",
            crate::term::cut_bytes(&f.subject, SUBJECT_LABEL_BYTES),
        ),
    ]);
    v.extend(owner_labels(f.owner.as_ref()));
    v
}

/// The standard `process_*` families of the agent's own process, read from /proc/self at each scrape (the
/// agent's own /proc, whatever `--host-root` says).
#[derive(Debug)]
struct Process {
    /// Clock ticks per second and page size, for /proc/self/stat's units.
    ticks: f64,
    page: f64,
    /// The machine's boot time (Unix seconds), for the start time.
    boot: Option<f64>,
}

impl Process {
    fn start() -> Process {
        // SAFETY: sysconf reads a constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        });
        Process {
            ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
            page: if page > 0 { page as f64 } else { 4096.0 },
            boot,
        }
    }

    /// (cpu seconds, resident bytes, virtual bytes, start time) from /proc/self/stat.
    fn stat(&self) -> Option<(f64, f64, f64, Option<f64>)> {
        let s = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command, which may hold spaces and parentheses: state is field 3.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let n = |i: usize| f.get(i - 3)?.parse::<f64>().ok();
        let cpu = (n(14)? + n(15)?) / self.ticks;
        let start = self.boot.zip(n(22)).map(|(b, t)| b + t / self.ticks);
        Some((cpu, n(24)? * self.page, n(23)?, start))
    }
}

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        }
        if let Some((cpu, rss, vsize, start)) = self.stat() {
            let c = ConstCounter::new(cpu);
            c.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
            gauge(
                &mut enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                vsize,
            )?;
            if let Some(t) = start {
                gauge(
                    &mut enc,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    t,
                )?;
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors",
                d.count() as f64,
            )?;
        }
        if let Ok(l) = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .ok_or(())
        {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors",
                l as f64,
            )?;
        }
        Ok(())
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

    fn finding(kind: &'static str, subject: &str, pod: Option<&str>) -> Finding {
        Finding {
            check: "ghosts",
            kind,
            severity: Severity::Warning,
            summary: String::new(),
            subject: subject.into(),
            owner: pod.map(|p| crate::owner::Owner {
                namespace: Some("shop".into()),
                pod: Some(p.into()),
                container: Some("app".into()),
                ..Default::default()
            }),
            evidence: vec![],
            advice: vec![],
        }
    }

    /// Every finding of a run is one `wonk_finding` series with its subject and pod; the next run replaces them;
    /// beyond the cap they are counted, not exported; a failed run keeps the last ones.
    #[test]
    fn findings_are_info_series_replaced_per_run_and_capped() {
        let m = Metrics::new(20);
        m.declare("ghosts");
        let run = |fs: Vec<Finding>| CheckOutput {
            findings: fs,
            ..Default::default()
        };
        let d = std::time::Duration::ZERO;
        m.record_run(
            "ghosts",
            d,
            Ok(&run(vec![
                finding("deleted", "/var/lib/kubelet/pods/x/\"q\"\n", Some("web-0")),
                finding("replaced", "/etc/日本語.conf", None),
            ])),
        );
        let t = m.text();
        assert!(
            t.contains(
                "wonk_finding{check=\"ghosts\",kind=\"deleted\",severity=\"warning\",\
                 subject=\"/var/lib/kubelet/pods/x/\\\"q\\\"\\n\",namespace=\"shop\",pod=\"web-0\",\
                 container=\"app\"} 1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("subject=\"/etc/日本語.conf\",namespace=\"\",pod=\"\",container=\"\"} 1"),
            "{t}"
        );
        m.record_run(
            "ghosts",
            d,
            Ok(&run(vec![finding("deleted", "/b", Some("db-0"))])),
        );
        let t = m.text();
        assert_eq!(t.matches("wonk_finding{").count(), 1, "{t}");
        assert!(t.contains("subject=\"/b\""), "{t}");
        m.record_run("ghosts", d, Err("boom"));
        assert!(m.text().contains("subject=\"/b\""));
        let many: Vec<Finding> = (0..FINDING_SERIES_PER_CHECK + 7)
            .map(|i| finding("deleted", &format!("/m/{i}"), None))
            .collect();
        m.record_run("ghosts", d, Ok(&run(many)));
        let t = m.text();
        assert_eq!(t.matches("wonk_finding{").count(), FINDING_SERIES_PER_CHECK);
        assert!(
            t.contains("wonk_finding_series_dropped_total{check=\"ghosts\"} 7\n"),
            "{t}"
        );
        let long = "x".repeat(SUBJECT_LABEL_BYTES - 1) + "日";
        m.add_findings("kmsg", &[finding("htree-full", &long, None)]);
        let t = m.text();
        assert!(
            t.contains(&format!(
                "subject=\"{}\"",
                "x".repeat(SUBJECT_LABEL_BYTES - 1)
            )),
            "cut at a boundary"
        );
    }

    #[test]
    fn process_metrics_and_build_revision() {
        let t = Metrics::new(20).text();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            let v: f64 = t
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name}: {t}"))
                .parse()
                .unwrap();
            assert!(v >= 0.0 && v.is_finite(), "{name}{v}");
        }
        assert!(
            t.contains("# TYPE process_cpu_seconds_total counter"),
            "{t}"
        );
        let start: f64 = t
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(start > 1.6e9, "{start}");
        let rev = env!("WONK_GIT_REVISION");
        assert!(
            rev == "unknown" || (rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert!(t.contains(&format!("revision=\"{rev}\"")), "{t}");
    }
}
