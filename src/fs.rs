//! `wonk fs`: the mounted ext4 filesystems and the features that decide how large a directory index can grow.

use crate::ext4::htree::{filesystems, FsInfo};
use crate::investigation::Investigation;
use crate::term::{fit, scalar, Style};
use serde_json::Value;
use std::io::{self, Write};

/// `wonk fs`'s registration.
pub const INVESTIGATION: Investigation = Investigation {
    name: "fs",
    about: "List the mounted ext4 filesystems and the features that decide how large a directory index can grow",
    args: |c| c,
    run: |_, env| {
        let fss = filesystems(env.host)?;
        env.emit(&fss, |w, f, s| table(w, f, s))?;
        Ok(crate::finding::exit::OK)
    },
};

/// The human rendering of `wonk fs`.
pub fn table(w: &mut dyn Write, fss: &[FsInfo], style: Style) -> io::Result<()> {
    writeln!(
        w,
        "{}",
        style.bold(&format!(
            "{:<10} {:<7} {:>5}  {:<9} {:<9} {:<9} {:<8}  {}",
            "DEVICE", "MAJ:MIN", "BLOCK", "dir_index", "large_dir", "csum", "casefold", "MOUNT"
        ))
    )?;
    for f in fss {
        let v = serde_json::to_value(f).unwrap_or(Value::Null);
        let feat = |k: &str| {
            if v["features"][k].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        };
        writeln!(
            w,
            "{:<10} {:<7} {:>5}  {:<9} {:<9} {:<9} {:<8}  {}",
            fit(v["device_name"].as_str().unwrap_or("-"), 10),
            scalar(&v["device"]),
            v["block_size"]
                .as_u64()
                .map_or("-".to_string(), |b| b.to_string()),
            feat("dir_index"),
            feat("large_dir"),
            feat("metadata_csum"),
            feat("casefold"),
            crate::term::escape(v["mount_point"].as_str().unwrap_or("-"))
        )?;
        if let Some(e) = v["error"].as_str() {
            writeln!(w, "    {} {}", style.dim("error:"), crate::term::escape(e))?;
        }
    }
    Ok(())
}
