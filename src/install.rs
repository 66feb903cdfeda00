//! `wonk install --to DIR`: copies the running binary to DIR/wonk, for images that have no shell to copy it with
//! (wonk's is `FROM scratch`): node-problem-detector's initContainer runs it into a volume NPD then runs
//! `wonk check` from. It writes only DIR/wonk, atomically: a new file created in DIR with `O_EXCL | O_NOFOLLOW`
//! (never through a link someone left there), filled, made 0755, synced, then renamed over DIR/wonk.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// `wonk install` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to put the binary in, as DIR/wonk (replaced if it exists). DIR itself must exist and must not
    /// be a symlink.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// Copies `/proc/self/exe` to `dir/wonk`; returns the path written.
pub fn install(dir: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::fs::File::open("/proc/self/exe")
        .map_err(|e| anyhow::anyhow!("cannot read wonk's own binary (/proc/self/exe): {e}"))?;
    install_from(exe, dir)
}

fn install_from(mut src: std::fs::File, dir: &Path) -> anyhow::Result<PathBuf> {
    use rustix::fs::{Mode, OFlags};
    let named = |e: &dyn std::fmt::Display| anyhow::anyhow!("--to {}: {e}", dir.display());
    let d = crate::host::open_dir_at(&rustix::fs::CWD, dir).map_err(|e| named(&e))?;
    let tmp = format!(".wonk.install.{}", std::process::id());
    let fd = rustix::fs::openat(
        &d,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o700),
    )
    .map_err(|e| named(&format!("cannot create {tmp}: {e}")))?;
    let mut out = std::fs::File::from(fd);
    let copied = (|| -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        rustix::fs::fchmod(out.as_fd(), Mode::from_raw_mode(0o755))?;
        out.sync_all()?;
        rustix::fs::renameat(&d, tmp.as_str(), &d, "wonk")?;
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = rustix::fs::unlinkat(&d, tmp.as_str(), rustix::fs::AtFlags::empty());
        return Err(named(&e));
    }
    // The rename is durable once the directory is.
    let _ = rustix::fs::fsync(&d);
    Ok(dir.join("wonk"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wonk-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn copies_atomically_with_mode_0755_and_replaces_a_link_not_its_target() {
        let d = scratch("ok");
        let src = d.join("src");
        std::fs::write(&src, b"\x7fELF binary").unwrap();
        // A symlink where the binary goes: the rename replaces the link, its target is untouched.
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let to = d.join("to");
        std::fs::create_dir(&to).unwrap();
        std::os::unix::fs::symlink(&victim, to.join("wonk")).unwrap();
        let p = install_from(std::fs::File::open(&src).unwrap(), &to).unwrap();
        assert_eq!(p, to.join("wonk"));
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::fs::read(&p).unwrap(), b"\x7fELF binary");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let names: Vec<_> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["wonk"], "no temporary file left");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn never_writes_through_a_planted_link_or_a_symlinked_dir() {
        let d = scratch("hostile");
        let src = d.join("src");
        std::fs::write(&src, b"new").unwrap();
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let to = d.join("to");
        std::fs::create_dir(&to).unwrap();
        let tmp = to.join(format!(".wonk.install.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = install_from(std::fs::File::open(&src).unwrap(), &to).unwrap_err();
        assert!(
            e.to_string().contains("cannot create .wonk.install."),
            "{e}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!to.join("wonk").exists());
        let link = d.join("link");
        std::os::unix::fs::symlink(&to, &link).unwrap();
        let e = install_from(std::fs::File::open(&src).unwrap(), &link).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("--to {}", link.display())),
            "{e}"
        );
        assert!(install_from(std::fs::File::open(&src).unwrap(), &d.join("none")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
