//! The hostile tier: each test stages an attack a pod can make on wonk (it controls its files, volumes, names,
//! command lines, mount tables, cgroups and the kernel-log lines it writes) with real kernel objects, and asserts
//! that wonk stays safe: it is not fooled, stalled, crashed or bloated. docs/SECURITY.md is the threat model.

// First: its macros are in scope for the modules below it.
#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod cgroups;
mod containerd;
mod deleted;
mod enospc;
mod fleet;
mod htree;
mod http;
mod kmsg;
mod orphans;
mod paths;
