//! Parser for `/proc/PID/mountinfo` (proc(5)).
//!
//! Byte-based: paths stay as bytes, so non-UTF-8 names survive intact. The kernel escapes space, tab, newline
//! and backslash as `\040`, `\011`, `\012` and `\134`; every `\ooo` octal escape is decoded. A malformed line is
//! counted and skipped, never fatal, because mountinfo comes from processes wonk does not trust.

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The path inside the source filesystem that is mounted (`/` for a whole filesystem, more for a bind).
    pub root: Vec<u8>,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: Vec<u8>,
    pub options: String,
    /// Optional fields such as `shared:1` or `master:2`.
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: Vec<u8>,
    pub super_options: Vec<u8>,
}

/// The suffix the kernel appends to a mount root whose dentry was unlinked.
pub const DELETED_SUFFIX: &[u8] = b"//deleted";

impl Mount {
    /// `MAJ:MIN` of the mounted filesystem.
    pub fn dev(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether the mount's root dentry has been unlinked on its filesystem.
    pub fn root_deleted(&self) -> bool {
        self.root.ends_with(DELETED_SUFFIX)
    }

    /// The mount's root with any `//deleted` marker removed.
    pub fn root_path(&self) -> &[u8] {
        self.root.strip_suffix(DELETED_SUFFIX).unwrap_or(&self.root)
    }

    /// The value of a `key=value` super option, such as overlay's `upperdir`.
    pub fn super_option(&self, key: &str) -> Option<&[u8]> {
        split_options(&self.super_options).find_map(|opt| {
            let rest = opt.strip_prefix(key.as_bytes())?;
            rest.strip_prefix(b"=")
        })
    }

    /// Whether the per-mount options include `flag` (for example `ro`).
    pub fn has_option(&self, flag: &str) -> bool {
        self.options.split(',').any(|o| o == flag)
    }
}

/// Splits mount options on commas. overlay escapes commas inside paths with a backslash, so `\,` does not split.
fn split_options(opts: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = opts;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' => i += 2,
                b',' => break,
                _ => i += 1,
            }
        }
        let end = i.min(rest.len());
        let item = &rest[..end];
        rest = if end < rest.len() {
            &rest[end + 1..]
        } else {
            &[]
        };
        Some(item)
    })
}

/// A line that could not be parsed, kept for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses a whole mountinfo file. Good lines are returned in order; bad lines are reported, not fatal.
pub fn parse(data: &[u8]) -> (Vec<Mount>, Vec<BadLine>) {
    let mut mounts = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(m) => mounts.push(m),
            Err(reason) => bad.push(BadLine {
                line: i + 1,
                reason,
            }),
        }
    }
    (mounts, bad)
}

/// Parses one mountinfo line.
pub fn parse_line(line: &[u8]) -> Result<Mount, &'static str> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |what: &'static str| fields.next().filter(|f| !f.is_empty()).ok_or(what);
    let id = parse_u32(next("missing mount id")?).ok_or("bad mount id")?;
    let parent_id = parse_u32(next("missing parent id")?).ok_or("bad parent id")?;
    let devfield = next("missing major:minor")?;
    let colon = devfield
        .iter()
        .position(|&b| b == b':')
        .ok_or("bad major:minor")?;
    let major = parse_u32(&devfield[..colon]).ok_or("bad major")?;
    let minor = parse_u32(&devfield[colon + 1..]).ok_or("bad minor")?;
    let root = unescape(next("missing root")?);
    let mount_point = unescape(next("missing mount point")?);
    let options = String::from_utf8_lossy(next("missing mount options")?).into_owned();
    let mut optional = Vec::new();
    loop {
        let f = next("missing separator")?;
        if f == b"-" {
            break;
        }
        optional.push(String::from_utf8_lossy(f).into_owned());
    }
    let fs_type = String::from_utf8_lossy(&unescape(next("missing fs type")?)).into_owned();
    // The source may be empty in principle; the kernel prints "none" then, but be lenient.
    let source = fields.next().map(unescape).unwrap_or_default();
    let super_options = fields.next().map(unescape).unwrap_or_default();
    Ok(Mount {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Decodes the kernel's `\ooo` octal escapes. Anything else is kept byte for byte.
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// overlay escapes `,`, `:` and `\` in its directory options (`upperdir=`, `lowerdir=`) with a backslash.
pub fn unescape_overlay(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut it = b.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where `path` (a path as `mounts`' reader sees it) lies inside the filesystem with device `dev`, through the
/// deepest of `mounts` of that filesystem whose mount point contains it (the last one mounted, on a tie). By the
/// names alone: a symlink on the way is not followed, so a path through one maps to where the name is, not to
/// what it points at.
pub fn fs_path(path: &[u8], mounts: &[Mount], dev: (u32, u32)) -> Option<Vec<u8>> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.dev() == dev && path_under(path, &h.mount_point))
        .max_by_key(|(i, h)| (h.mount_point.len(), *i))
        .map(|(_, h)| path_join(h.root_path(), path_rest(path, &h.mount_point)))
}

/// The host's own mount of the overlay that `m` (a container's root, from the container's mount table) shows:
/// the mount of the same overlay superblock (the same anonymous device) in `host_mounts`. A container can mount
/// an overlay of its own with any `upperdir` it likes, written as it sees paths; only the host's table says
/// where a layer is, and a container's own overlay is not in it.
pub fn host_overlay<'a>(m: &Mount, host_mounts: &'a [Mount]) -> Option<&'a Mount> {
    if m.fs_type != "overlay" {
        return None;
    }
    host_mounts
        .iter()
        .rev()
        .find(|h| h.fs_type == "overlay" && h.dev() == m.dev())
}

/// Whether `path` is `prefix` or lies below it, by whole path components.
pub fn path_under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return path.starts_with(b"/");
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// `path` with `prefix` removed, as an absolute path (`/` when they are equal). Call only when [`path_under`].
pub fn path_rest<'a>(path: &'a [u8], prefix: &[u8]) -> &'a [u8] {
    if prefix == b"/" {
        return path;
    }
    let rest = &path[prefix.len()..];
    if rest.is_empty() {
        b"/"
    } else {
        rest
    }
}

/// Joins an absolute base with an absolute rest (`/a` + `/b/c` = `/a/b/c`, `/a` + `/` = `/a`).
pub fn path_join(base: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    if rest == b"/" || rest.is_empty() {
        return out;
    }
    if out.ends_with(b"/") {
        out.pop();
    }
    if !rest.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_overlay_is_known_only_by_the_hosts_mount_of_it() {
        let host = parse(
            b"22 1 254:0 / / rw - ext4 /dev/vda rw\n\
              40 22 0:51 / /run/c/k8s.io/abc/rootfs rw - overlay overlay rw,lowerdir=/l,upperdir=/s/1/fs,workdir=/s/1/work\n",
        )
        .0;
        let theirs = parse_line(
            b"900 800 0:51 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/etc,workdir=/w",
        )
        .unwrap();
        assert_eq!(
            host_overlay(&theirs, &host)
                .unwrap()
                .super_option("upperdir"),
            Some(&b"/s/1/fs"[..])
        );
        let own = parse_line(
            b"901 800 0:77 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/etc,workdir=/w",
        )
        .unwrap();
        assert_eq!(host_overlay(&own, &host), None);
        assert_eq!(
            fs_path(b"/etc/shadow", &host, (254, 0)).unwrap(),
            b"/etc/shadow"
        );
        assert_eq!(fs_path(b"/etc/shadow", &host, (0, 51)), None);
    }

    #[test]
    fn parses_a_proc5_example_with_optional_fields() {
        let line = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue";
        let m = parse_line(line).unwrap();
        assert_eq!((m.id, m.parent_id, m.major, m.minor), (36, 35, 98, 0));
        assert_eq!(m.root, b"/mnt1");
        assert_eq!(m.mount_point, b"/mnt2");
        assert_eq!(m.optional, vec!["master:1", "shared:7"]);
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, b"/dev/root");
        assert_eq!(m.super_options, b"rw,errors=continue");
        assert!(m.has_option("noatime"));
    }

    #[test]
    fn decodes_octal_escapes_and_keeps_non_utf8() {
        let line = b"1 0 8:1 /a\\040b\\011c\\012d\\134e /m\xff\\040x rw - ext4 /dev/sda1 rw";
        let m = parse_line(line).unwrap();
        assert_eq!(m.root, b"/a b\tc\nd\\e");
        assert_eq!(m.mount_point, b"/m\xff x");
        assert!(m.optional.is_empty());
    }

    #[test]
    fn a_lone_backslash_is_kept() {
        assert_eq!(unescape(b"a\\"), b"a\\");
        assert_eq!(unescape(b"a\\9xy"), b"a\\9xy");
        assert_eq!(unescape(b"\\0"), b"\\0");
    }

    #[test]
    fn deleted_roots_are_recognised() {
        let line = b"905 880 254:0 /data/x.txt//deleted /data.txt ro,relatime - ext4 /dev/vda rw";
        let m = parse_line(line).unwrap();
        assert!(m.root_deleted());
        assert_eq!(m.root_path(), b"/data/x.txt");
    }

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let data = b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\ngarbage\n2 1 8:x / /b rw - ext4 s o\n3 1 0:5 / /c rw shared:1\n";
        let (ok, bad) = parse(data);
        assert_eq!(ok.len(), 1);
        assert_eq!(
            bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[test]
    fn overlay_super_options() {
        let line = b"700 600 0:77 / / rw,relatime - overlay overlay rw,lowerdir=/s/1/fs:/s/2/fs,upperdir=/s/7/fs,workdir=/s/7/work";
        let m = parse_line(line).unwrap();
        assert_eq!(m.super_option("upperdir"), Some(&b"/s/7/fs"[..]));
        assert_eq!(m.super_option("lowerdir"), Some(&b"/s/1/fs:/s/2/fs"[..]));
        assert_eq!(m.super_option("index"), None);
    }

    #[test]
    fn path_helpers() {
        assert!(path_under(b"/a/b", b"/a"));
        assert!(path_under(b"/a", b"/a"));
        assert!(!path_under(b"/ab", b"/a"));
        assert!(path_under(b"/x", b"/"));
        assert_eq!(path_rest(b"/a/b", b"/a"), b"/b");
        assert_eq!(path_rest(b"/a", b"/a"), b"/");
        assert_eq!(path_join(b"/m", b"/b/c"), b"/m/b/c");
        assert_eq!(path_join(b"/", b"/b"), b"/b");
        assert_eq!(path_join(b"/m", b"/"), b"/m");
    }
}
