//! The hostile tier: each test stages an attack a pod can make on wonk (it controls its files, volumes, names,
//! command lines, mount tables, cgroups and the kernel-log lines it writes) with real kernel objects, and asserts
//! that wonk stays safe: it is not fooled, stalled, crashed or bloated. docs/SECURITY.md is the threat model.

#[path = "../common/mod.rs"]
mod common;
mod containerd;
mod deleted;
mod orphans;
mod htree;
mod paths;
