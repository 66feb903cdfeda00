//! Metrics as a check declares and fills them, before any exposition format: a check lists its families once
//! ([`Family`]) and, after each run, puts its samples in a [`Sink`]. The agent (`agent::metrics`) registers every
//! check's families and turns sinks into Prometheus series; nothing here knows Prometheus' text formats.

use crate::owner::Owner;

/// A label set: (name, value) pairs in a fixed order.
pub type Labels = Vec<(String, String)>;

/// Whether a family describes the node now, or counts events since the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rebuilt from every run of its check: a series whose subject went goes with it.
    Gauge,
    /// Only grows; exported with the `_total` suffix. Its labels must be bounded (no pods, no paths).
    Counter,
}

/// One metric family a check exports, named without the `wonk_` prefix (and, for counters, without `_total`).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

impl Family {
    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
        }
    }
}

/// One sample a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: &'static str,
    pub labels: Labels,
    pub value: f64,
}

/// The samples of one run of one check. `top` is how many subjects (directories, pods) a check may export per
/// family, so that label cardinality stays bounded.
#[derive(Debug, Default)]
pub struct Sink {
    pub top: usize,
    pub samples: Vec<Sample>,
}

impl Sink {
    pub fn new(top: usize) -> Sink {
        Sink {
            top,
            samples: Vec::new(),
        }
    }

    /// Sets a gauge, or adds to a counter, of `family` for `labels`.
    pub fn put(&mut self, family: &'static str, labels: Labels, value: f64) {
        self.samples.push(Sample {
            family,
            labels,
            value,
        });
    }
}

/// Labels from `(name, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// namespace, pod and container of an owner; empty strings when unknown (not a pod's).
pub fn owner_labels(o: Option<&Owner>) -> Labels {
    let g = |f: fn(&Owner) -> &Option<String>| o.and_then(|o| f(o).clone()).unwrap_or_default();
    vec![
        ("namespace".into(), g(|o| &o.namespace)),
        ("pod".into(), g(|o| &o.pod)),
        ("container".into(), g(|o| &o.container)),
    ]
}

/// namespace and pod of an owner, for a family about pods rather than containers (no container label).
pub fn pod_labels(o: Option<&Owner>) -> Labels {
    let mut l = owner_labels(o);
    l.retain(|(k, _)| k != "container");
    l
}
