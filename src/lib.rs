//! wonk finds the wonkeries in the substrate under containers and names the pod behind each one.
//!
//! The flow is: [`host`] (the node as data, read under `--host-root`) -> [`owner`] (attribution to
//! namespace/pod/container) -> [`checks`] (one module per check) -> [`finding`] (one finding type) ->
//! [`render`] (table, JSON). Investigation commands such as [`who`] reuse the same layers.
//! `docs/ARCHITECTURE.md` is the map.

pub mod agent;
pub mod args;
pub mod checks;
#[cfg(feature = "cri")]
pub mod cri;
pub mod enospc;
pub mod ext4;
pub mod finding;
pub mod fs;
pub mod host;
pub mod install;
pub mod investigation;
pub mod kmsg;
pub mod metric;
pub mod owner;
pub mod render;
pub mod stop;
pub mod term;
pub mod top;
pub mod who;
