//! Investigations: the commands that answer a question rather than judge the node (`wonk who`, `wonk top`,
//! `wonk enospc`, `wonk fs`). They are interactive and live, may run for a while, and are not run by `wonk scan`,
//! the agent or NPD. Each lives in one module that owns its arguments, its run and its table view, and registers
//! itself once here, as a check does in [`crate::checks::registry`].

use crate::host::Host;
use crate::owner::Attributor;
use crate::term::Style;
use std::io::Write;

/// What an investigation is given.
pub struct Env<'a> {
    pub host: &'a Host,
    pub owners: &'a Attributor<'a>,
    /// JSON for machines instead of a table.
    pub json: bool,
    pub style: Style,
    /// The node's root as given (`--host-root`), for paths given on the command line.
    pub host_root: &'a std::path::Path,
    /// The pods whose findings to list (`-n`, `--pod`), for investigations that report findings.
    pub scope: crate::finding::Scope,
    pub out: &'a mut dyn Write,
}

impl Env<'_> {
    /// Writes `value` as JSON, or as the table `table` draws.
    pub fn emit<T: serde::Serialize>(
        &mut self,
        value: &T,
        table: impl FnOnce(&mut dyn Write, &T, Style) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.json {
            crate::render::json(self.out, value)
        } else {
            table(self.out, value, self.style)
        }
    }
}

/// An investigation's one registration.
pub struct Investigation {
    pub name: &'static str,
    pub about: &'static str,
    /// Adds its own arguments to its clap command.
    pub args: fn(clap::Command) -> clap::Command,
    /// Runs it and returns the exit code.
    pub run: fn(&clap::ArgMatches, &mut Env) -> anyhow::Result<i32>,
}

/// Every investigation, in the order `wonk --help` lists them.
pub fn registry() -> &'static [Investigation] {
    &[
        crate::who::INVESTIGATION,
        crate::top::INVESTIGATION,
        crate::enospc::INVESTIGATION,
        crate::fs::INVESTIGATION,
    ]
}
