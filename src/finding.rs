//! The one type every check produces: a [`Finding`], with its evidence; and a [`Report`], the findings of a
//! run plus what wonk could not see ([`BlindSpot`]). The JSON shape of both is documented in
//! `docs/OUTPUT.md` and is stable.

pub use crate::host::BlindSpot;
use crate::metric::Sink;
use crate::owner::Owner;
use crate::term::Style;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARN",
            Severity::Critical => "CRIT",
        }
    }
}

/// One problem found on the node.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The check that found it (`ghosts`, ...).
    pub check: &'static str,
    /// What kind of problem, within the check (`deleted`, `replaced`, ...).
    pub kind: &'static str,
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The thing the finding is about: a path, a pid, a device.
    pub subject: String,
    /// Who it belongs to; `null` when it belongs to no pod or container.
    pub owner: Option<Owner>,
    /// The raw facts the finding was derived from, as `name: value` pairs in a stable order.
    #[serde(serialize_with = "serialize_pairs")]
    pub evidence: Vec<(String, Value)>,
    /// What to do about it.
    pub advice: Vec<String>,
}

/// Serialises `(name, value)` pairs as a JSON object that keeps their order.
fn serialize_pairs<S: serde::Serializer, V: Serialize>(
    pairs: &[(String, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

impl Finding {
    /// Appends one piece of evidence.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Finding {
        self.evidence.push((
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        ));
        self
    }
}

/// A check's typed output: everything it looked at, beyond its findings (every shim, healthy or not; every
/// directory index read). Only the check's own module knows its fields; the report, the renderer and the agent
/// use it through this trait.
pub trait Output: Send + Sync + std::fmt::Debug {
    /// The output for machines: `details` of the check in the JSON report.
    fn to_json(&self) -> Value;
    /// Puts the check's samples into its metric families (declared in its `checks::Unit`).
    fn metrics(&self, _sink: &mut Sink) {}
    /// The check's own view for people, shown above the findings when the check runs alone (its subcommand).
    fn table(&self, _w: &mut dyn Write, _style: Style) -> io::Result<()> {
        Ok(())
    }
}

/// What one check returned.
#[derive(Debug, Default)]
pub struct CheckOutput {
    pub findings: Vec<Finding>,
    pub blind_spots: Vec<BlindSpot>,
    /// Set when the check could not do its job at all.
    pub failed: Option<String>,
    /// Counters that show the check's coverage, e.g. `mount_namespaces: 12`: shown to people and in JSON, never
    /// read back by name (typed figures are in `output`).
    pub stats: Vec<(String, u64)>,
    /// The check's typed output.
    pub output: Option<Box<dyn Output>>,
}

/// The result of a run of one or more checks.
#[derive(Debug, Serialize)]
pub struct Report {
    pub wonk_version: &'static str,
    pub command: String,
    pub host_root: String,
    pub checks: Vec<CheckRun>,
    pub findings: Vec<Finding>,
    pub blind_spots: Vec<BlindSpot>,
    /// The pods the findings were narrowed to (`-n`, `--pod`), and how many findings that hid; absent when every
    /// finding is listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeApplied>,
    /// What wonk changed on the host, only when asked to (`wonk shims --reap`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Value>,
    pub exit_code: i32,
    /// Findings listed per check, kind and namespace before [`fold`] folds the rest ([`FOLD_AFTER`]).
    #[serde(skip)]
    pub fold_after: usize,
}

/// Which pods' findings a command lists: every one (kubectl's `-A`, the default), or those of one namespace
/// (`-n`) and/or of pods of one name (`--pod`). A finding that belongs to no pod is listed only for every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl Scope {
    pub fn is_all(&self) -> bool {
        self.namespace.is_none() && self.pod.is_none()
    }

    pub fn selects(&self, f: &Finding) -> bool {
        let owner = f.owner.as_ref();
        let is = |want: &Option<String>, got: Option<&String>| {
            want.as_ref().map_or(true, |w| got == Some(w))
        };
        is(&self.namespace, owner.and_then(|o| o.namespace.as_ref()))
            && is(&self.pod, owner.and_then(|o| o.pod.as_ref()))
    }
}

/// A [`Scope`] as the report records it.
#[derive(Debug, Serialize)]
pub struct ScopeApplied {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// Findings of the run that the scope hid.
    pub hidden: usize,
}

/// How one check went.
#[derive(Debug, Serialize)]
pub struct CheckRun {
    pub name: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    pub error: Option<String>,
    pub findings: usize,
    /// Findings beyond [`Report::fold_after`] per (kind, namespace), counted in the folded finding that stands
    /// for them rather than listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub folded: usize,
    pub duration_ms: u64,
    #[serde(serialize_with = "serialize_pairs")]
    pub stats: Vec<(String, u64)>,
    #[serde(
        rename = "details",
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_output"
    )]
    pub output: Option<Box<dyn Output>>,
}

fn serialize_output<S: serde::Serializer>(
    o: &Option<Box<dyn Output>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match o {
        Some(o) => o.to_json().serialize(s),
        None => s.serialize_none(),
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Findings listed per check, kind and Kubernetes namespace before the rest are folded into one finding.
pub const FOLD_AFTER: usize = 100;

/// Keeps at most `keep` findings of each (check, kind, namespace) and replaces the rest of each group with one
/// finding that counts them, so that what a pod can multiply (bind mounts, cgroups, kernel-log lines) cannot make
/// a report, its table or its JSON grow without bound. The most severe are kept, then by subject. The namespace is
/// the owner's Kubernetes namespace: one tenant's findings can only fold its own, never another namespace's.
/// Findings without a namespace (the host's, or a pod not known) share one group. Returns how many were folded.
pub fn fold(findings: &mut Vec<Finding>, keep: usize) -> usize {
    use std::collections::HashMap;
    type Key = (&'static str, &'static str, Option<String>);
    let key = |f: &Finding| -> Key {
        (
            f.check,
            f.kind,
            f.owner.as_ref().and_then(|o| o.namespace.clone()),
        )
    };
    let mut sizes: HashMap<Key, usize> = HashMap::new();
    for f in findings.iter() {
        *sizes.entry(key(f)).or_default() += 1;
    }
    if sizes.values().all(|&n| n <= keep) {
        return 0;
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    struct Folded {
        count: usize,
        worst: Severity,
        by_severity: [usize; 3],
        examples: Vec<String>,
    }
    let mut listed: HashMap<Key, usize> = HashMap::new();
    let mut folded: Vec<(Key, Folded)> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut total = 0;
    findings.retain(|f| {
        let k = key(f);
        let n = listed.entry(k.clone()).or_default();
        if *n < keep {
            *n += 1;
            return true;
        }
        let i = *index.entry(k.clone()).or_insert_with(|| {
            folded.push((
                k,
                Folded {
                    count: 0,
                    worst: f.severity,
                    by_severity: [0; 3],
                    examples: Vec::new(),
                },
            ));
            folded.len() - 1
        });
        let g = &mut folded[i].1;
        g.count += 1;
        g.worst = g.worst.max(f.severity);
        g.by_severity[f.severity as usize] += 1;
        if g.examples.len() < 3 {
            g.examples.push(f.subject.clone());
        }
        total += 1;
        false
    });
    for ((check, kind, namespace), g) in folded {
        let in_ns = namespace
            .as_deref()
            .map_or("outside any known namespace".to_string(), |n| {
                format!("in namespace {n}")
            });
        findings.push(
            Finding {
                check,
                kind,
                severity: g.worst,
                summary: format!(
                    "{} more {check} {kind} findings {in_ns}, folded: the first {keep} are listed",
                    g.count
                ),
                subject: format!("{} more {kind} ({in_ns})", g.count),
                owner: namespace.map(|n| Owner {
                    namespace: Some(n),
                    ..Default::default()
                }),
                evidence: Vec::new(),
                advice: vec![format!(
                    "the listed {kind} findings show what the folded ones are; once those are dealt with, run wonk                      again to list the rest"
                )],
            }
            .with("folded", g.count)
            .with("listed", keep)
            .with(
                "folded_by_severity",
                serde_json::json!({
                    "critical": g.by_severity[Severity::Critical as usize],
                    "warning": g.by_severity[Severity::Warning as usize],
                    "info": g.by_severity[Severity::Info as usize],
                }),
            )
            .with("folded_first_subjects", g.examples),
        );
    }
    total
}

/// Exit codes, for scripts and monitoring plugins.
pub mod exit {
    /// Nothing at warning level or above.
    pub const OK: i32 = 0;
    /// At least one warning, no critical finding.
    pub const WARNING: i32 = 1;
    /// At least one critical finding.
    pub const CRITICAL: i32 = 2;
    /// wonk could not do its job (bad arguments, no /proc, a check failed outright).
    pub const FAILED: i32 = 3;
}

impl Report {
    pub fn new(command: &str, host_root: &std::path::Path) -> Report {
        Report {
            wonk_version: env!("CARGO_PKG_VERSION"),
            command: command.to_string(),
            host_root: host_root.display().to_string(),
            checks: Vec::new(),
            findings: Vec::new(),
            blind_spots: Vec::new(),
            scope: None,
            actions: Vec::new(),
            exit_code: exit::OK,
            fold_after: FOLD_AFTER,
        }
    }

    /// Keeps only the findings `scope` selects (kubectl's `-n NAMESPACE` and `--pod POD`); the exit code and each
    /// check's count then speak of what is listed, and `scope` says how many were hidden.
    pub fn narrow(&mut self, scope: &Scope) {
        if scope.is_all() {
            return;
        }
        let before = self.findings.len();
        self.findings.retain(|f| scope.selects(f));
        for c in &mut self.checks {
            c.findings = self.findings.iter().filter(|f| f.check == c.name).count();
        }
        self.scope = Some(ScopeApplied {
            namespace: scope.namespace.clone(),
            pod: scope.pod.clone(),
            hidden: before - self.findings.len(),
        });
        self.exit_code = self.compute_exit();
    }

    /// Adds what a check returned and recomputes the exit code.
    pub fn add(&mut self, name: &'static str, mut out: CheckOutput, duration: std::time::Duration) {
        let found = out.findings.len();
        let folded = fold(&mut out.findings, self.fold_after);
        self.checks.push(CheckRun {
            name,
            status: if out.failed.is_some() { "failed" } else { "ok" },
            error: out.failed,
            findings: found,
            folded,
            duration_ms: duration.as_millis() as u64,
            stats: out.stats,
            output: out.output,
        });
        self.findings.extend(out.findings);
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        for b in out.blind_spots {
            if !self.blind_spots.contains(&b) {
                self.blind_spots.push(b);
            }
        }
        self.exit_code = self.compute_exit();
    }

    fn compute_exit(&self) -> i32 {
        if self.checks.iter().any(|c| c.error.is_some()) {
            return exit::FAILED;
        }
        match self.findings.iter().map(|f| f.severity).max() {
            Some(Severity::Critical) => exit::CRITICAL,
            Some(Severity::Warning) => exit::WARNING,
            _ => exit::OK,
        }
    }
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-27T17:31:33Z`).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(sev: Severity) -> Finding {
        Finding {
            check: "t",
            kind: "k",
            severity: sev,
            summary: "s".into(),
            subject: "x".into(),
            owner: None,
            evidence: vec![],
            advice: vec![],
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_693_986_282), "2023-09-06T07:44:42Z");
        assert_eq!(utc(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn exit_codes_follow_the_worst_finding() {
        let mut r = Report::new("scan", std::path::Path::new("/"));
        assert_eq!(r.exit_code, exit::OK);
        r.add(
            "a",
            CheckOutput {
                findings: vec![finding(Severity::Info)],
                ..Default::default()
            },
            Default::default(),
        );
        assert_eq!(r.exit_code, exit::OK);
        r.add(
            "b",
            CheckOutput {
                findings: vec![finding(Severity::Warning)],
                ..Default::default()
            },
            Default::default(),
        );
        assert_eq!(r.exit_code, exit::WARNING);
        r.add(
            "c",
            CheckOutput {
                findings: vec![finding(Severity::Critical)],
                ..Default::default()
            },
            Default::default(),
        );
        assert_eq!(r.exit_code, exit::CRITICAL);
        r.add(
            "d",
            CheckOutput {
                failed: Some("no".into()),
                ..Default::default()
            },
            Default::default(),
        );
        assert_eq!(r.exit_code, exit::FAILED);
    }

    #[test]
    fn findings_beyond_the_cap_fold_per_kind_and_namespace_with_exact_counts() {
        let of = |ns: Option<&str>, sev: Severity, subject: String| Finding {
            subject,
            owner: ns.map(|n| Owner {
                namespace: Some(n.into()),
                pod: Some("p".into()),
                ..Default::default()
            }),
            ..finding(sev)
        };
        let mut r = Report::new("ghosts", std::path::Path::new("/"));
        r.fold_after = 10;
        let mut findings: Vec<Finding> = (0..250)
            .map(|i| of(Some("attacker"), Severity::Warning, format!("/m{i:04}")))
            .collect();
        findings.push(of(Some("attacker"), Severity::Critical, "/zzz".into()));
        findings.extend((0..3).map(|i| of(Some("victim"), Severity::Warning, format!("/v{i}"))));
        findings.extend((0..12).map(|i| of(None, Severity::Info, format!("/h{i:02}"))));
        r.add(
            "t",
            CheckOutput {
                findings,
                ..Default::default()
            },
            Default::default(),
        );
        assert_eq!((r.checks[0].findings, r.checks[0].folded), (266, 241 + 2));
        let count = |ns: Option<&str>| {
            r.findings
                .iter()
                .filter(|f| f.owner.as_ref().and_then(|o| o.namespace.as_deref()) == ns)
                .count()
        };
        // 10 listed and one fold for the attacker; the victim's 3 untouched; the host's 10 and one fold.
        assert_eq!(
            (count(Some("attacker")), count(Some("victim")), count(None)),
            (11, 3, 11)
        );
        assert!(
            r.findings.iter().any(|f| f.subject == "/zzz"),
            "the most severe is listed"
        );
        let fold = r
            .findings
            .iter()
            .find(|f| f.evidence.iter().any(|(k, _)| k == "folded") && f.owner.is_some())
            .unwrap();
        let ev = |k: &str| &fold.evidence.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(ev("folded"), &serde_json::json!(241));
        assert_eq!(ev("folded_by_severity")["warning"], 241);
        assert_eq!(ev("folded_first_subjects")[0], "/m0009");
        assert_eq!(fold.severity, Severity::Warning);
        assert_eq!(r.exit_code, exit::CRITICAL);
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains("\"folded\":243"));
    }

    #[test]
    fn a_scope_narrows_findings_counts_and_exit_code() {
        let owned = |sev, ns: &str, pod: &str| Finding {
            owner: Some(Owner {
                namespace: Some(ns.into()),
                pod: Some(pod.into()),
                ..Default::default()
            }),
            ..finding(sev)
        };
        let mut r = Report::new("scan", std::path::Path::new("/"));
        r.add(
            "t",
            CheckOutput {
                findings: vec![
                    owned(Severity::Critical, "shop", "web-0"),
                    owned(Severity::Warning, "shop", "db-0"),
                    owned(Severity::Warning, "kube-system", "web-0"),
                    finding(Severity::Critical),
                ],
                ..Default::default()
            },
            Default::default(),
        );
        let mut all = Report::new("scan", std::path::Path::new("/"));
        all.narrow(&Scope::default());
        assert!(all.scope.is_none());
        let scoped = |ns: Option<&str>, pod: Option<&str>| {
            let mut r2 = Report::new("scan", std::path::Path::new("/"));
            r2.add(
                "t",
                CheckOutput {
                    findings: r.findings.clone(),
                    ..Default::default()
                },
                Default::default(),
            );
            r2.narrow(&Scope {
                namespace: ns.map(Into::into),
                pod: pod.map(Into::into),
            });
            r2
        };
        let s = scoped(Some("shop"), None);
        assert_eq!(s.findings.len(), 2);
        assert_eq!(s.checks[0].findings, 2);
        assert_eq!(s.exit_code, exit::CRITICAL);
        let s = scoped(Some("shop"), Some("db-0"));
        assert_eq!(s.findings.len(), 1);
        assert_eq!(
            s.exit_code,
            exit::WARNING,
            "the exit code speaks of what is listed"
        );
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j["scope"],
            serde_json::json!({"namespace": "shop", "pod": "db-0", "hidden": 3})
        );
        assert_eq!(scoped(None, Some("web-0")).findings.len(), 2);
        assert_eq!(scoped(Some("nope"), None).exit_code, exit::OK);
    }

    #[test]
    fn evidence_keeps_its_order_in_json() {
        let f = finding(Severity::Warning)
            .with("zeta", 1)
            .with("alpha", "two");
        let s = serde_json::to_string(&f).unwrap();
        assert!(s.find("zeta").unwrap() < s.find("alpha").unwrap(), "{s}");
    }
}
