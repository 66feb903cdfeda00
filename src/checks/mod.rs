//! Checks: each one is a module with one entry point, [`Check::run`], that turns the host model and the
//! attribution layer into findings. [`registry`] lists the checks `wonk scan` runs.

pub mod ghosts;
pub mod htree;
pub mod layers;
pub mod shims;

use crate::finding::{CheckOutput, Report};
use crate::host::Host;
use crate::owner::Attributor;
use std::time::Instant;

/// What every check is given.
pub struct Context<'a> {
    pub host: &'a Host,
    pub owners: &'a Attributor<'a>,
}

/// One check.
pub trait Check {
    /// The name used on the command line, in findings and in metrics.
    fn name(&self) -> &'static str;
    /// Looks at the node and reports. Never panics on what it reads, and never writes to the host.
    fn run(&self, ctx: &Context) -> CheckOutput;
}

/// Every check `wonk scan` runs, in order.
pub fn registry() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(ghosts::Ghosts),
        Box::new(shims::Shims::default()),
        Box::new(crate::kmsg::Kmsg),
        Box::new(htree::HtreeRisk::default()),
        Box::new(layers::Layers::default()),
    ]
}

/// Runs checks into one report, together with what the attribution layer could not see.
pub fn run(ctx: &Context, command: &str, checks: &[Box<dyn Check>]) -> Report {
    let mut report = Report::new(command, ctx.host.root());
    for check in checks {
        let t = Instant::now();
        let out = check.run(ctx);
        report.add(check.name(), out, t.elapsed());
    }
    report
        .blind_spots
        .extend(ctx.owners.blind_spots().iter().cloned());
    report
}
