//! What to do about an index, in words.

use super::*;

pub(super) fn advice(r: &HtreeReport, ix: &IndexReport) -> Vec<String> {
    let cf = &ix.create_failure;
    if !cf.at_max_levels {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !r.large_dir {
        out.push(format!(
            "tune2fs -O large_dir /dev/{} allows a third index level, so creates succeed again at once (it works \
             on a mounted filesystem). It cannot be undone; GRUB before 2.12 cannot boot from a filesystem with \
             large_dir; kernels before 5.14 could corrupt a directory that grows to 3 levels.",
            r.device.name
        ));
    }
    out.push(format!(
        "Or shard the directory: spread its {} entries over subdirectories (for example by a hash prefix of the \
         name), or remove what is no longer needed.",
        ix.entries.estimate
    ));
    out
}
