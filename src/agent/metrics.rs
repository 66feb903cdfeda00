//! The agent's metric families (prefix `wonk_`): every check's own families, declared in its `checks::Unit` and
//! filled from its typed output through a [`Sink`], and the agent's own (runs, errors, durations, findings and
//! blind spots per check). A check's gauges are rebuilt on every run of the check, so a pod's series disappear
//! when the pod goes; counters only grow.

use crate::checks::{self, Unit};
use crate::finding::{CheckOutput, Severity};
use crate::metric::{labels as l, Kind, Labels, Sink};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

type FGauge = Gauge<f64, AtomicU64>;

/// One check family, as registered.
enum Fam {
    Gauge(Family<Labels, FGauge>),
    Counter(Family<Labels, Counter>),
}

/// Every family the agent exports.
pub struct Metrics {
    registry: Registry,
    /// Held while a family is cleared and refilled, and while the registry is encoded, so that a scrape never
    /// sees a half-rebuilt family.
    lock: Mutex<()>,
    top: usize,
    /// The checks' own families, by name.
    families: HashMap<&'static str, Fam>,
    findings: Family<Labels, Gauge>,
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
        let mut families = HashMap::new();
        for f in checks::registry().iter().flat_map(|u| u.metrics) {
            let fam = match f.kind {
                Kind::Gauge => Fam::Gauge(reg!(f.name, f.help, Family::default())),
                Kind::Counter => Fam::Counter(reg!(f.name, f.help, Family::default())),
            };
            families.insert(f.name, fam);
        }
        Metrics {
            lock: Mutex::new(()),
            top,
            families,
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
