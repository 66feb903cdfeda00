//! containerd's state on disk: where it keeps it, and what each task bundle's `config.json` says.
//!
//! Offline first: the state and root directories come from each running containerd's command line and
//! `--config` file (`root`, `state`, `[grpc] address`), falling back to `/run/containerd` and
//! `/var/lib/containerd`. Bundles are `<state>/io.containerd.runtime.v2.task/<ns>/<id>/` (shim v2) and
//! `<state>/io.containerd.runtime.v1.linux/<ns>/<id>/` (shim v1). The CRI plugin writes the pod's identity into
//! each bundle's OCI spec as `io.kubernetes.cri.*` annotations.

use crate::host::BlindSpot;
use crate::host::{open_dir_at, open_regular_at, procfs, read_fd_bounded, read_regular, Host};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A config.json is a few KiB (tens with a seccomp profile); a larger one than this is not read.
const CONFIG_JSON_LIMIT: u64 = 1 << 20;

/// One containerd whose state wonk reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The daemon's pid, when it was found running.
    pub pid: Option<u32>,
    pub config: Option<PathBuf>,
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    /// How the directories were found: `process`, `default` or `flag`.
    pub found_by: &'static str,
}

/// What wonk takes from a containerd config file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDirs {
    pub root: Option<String>,
    pub state: Option<String>,
    pub grpc_address: Option<String>,
}

/// Reads the three settings wonk needs from containerd's TOML config. Only top-level `root`/`state` and
/// `[grpc] address` matter, so this reads `key = "string"` lines and section headers and ignores the rest.
pub fn parse_config(text: &str) -> ConfigDirs {
    let mut dirs = ConfigDirs::default();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            section = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Some(value) = toml_string(value.trim()) else {
            continue;
        };
        match (section.as_str(), key.trim()) {
            ("", "root") => dirs.root = Some(value),
            ("", "state") => dirs.state = Some(value),
            ("grpc", "address") => dirs.grpc_address = Some(value),
            _ => {}
        }
    }
    dirs
}

/// A TOML basic (`"..."`, with the common escapes) or literal (`'...'`) string, followed by nothing or a comment.
fn toml_string(v: &str) -> Option<String> {
    let mut chars = v.chars();
    match chars.next()? {
        '\'' => {
            let rest = chars.as_str();
            let end = rest.find('\'')?;
            Some(rest[..end].to_string())
        }
        '"' => {
            let mut out = String::new();
            loop {
                match chars.next()? {
                    '"' => return Some(out),
                    '\\' => match chars.next()? {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        c @ ('"' | '\\') => out.push(c),
                        _ => return None,
                    },
                    c => out.push(c),
                }
            }
        }
        _ => None,
    }
}

/// What [`discover`] found: the instances, and what it could not trust or read.
#[derive(Debug, Default)]
pub struct Discovery {
    pub instances: Vec<Instance>,
    pub blind_spots: Vec<BlindSpot>,
}

/// How many untrusted processes a blind spot names; the rest are counted.
const NAMED_UNTRUSTED: usize = 5;

/// Says which processes posing as `what` were not trusted, and why, in one blind spot (`None` when none were).
pub fn untrusted_blind_spot(
    scope: &str,
    what: &str,
    untrusted: &[(u32, String)],
) -> Option<BlindSpot> {
    if untrusted.is_empty() {
        return None;
    }
    let mut why: Vec<String> = untrusted
        .iter()
        .take(NAMED_UNTRUSTED)
        .map(|(pid, why)| format!("pid {pid}: {why}"))
        .collect();
    if untrusted.len() > NAMED_UNTRUSTED {
        why.push(format!("and {} more", untrusted.len() - NAMED_UNTRUSTED));
    }
    Some(BlindSpot::new(
        scope,
        format!("{} processes named {what}", untrusted.len()),
        format!(
            "not trusted as {what} (only a root-owned executable in the host's namespaces is), so nothing \
             was read on their word: {}",
            why.join("; ")
        ),
    ))
}

/// Finds every containerd on the node. `extra_state` adds state directories named on the command line.
///
/// A process is containerd only when it says so (comm and argv) and [`procfs::why_untrusted`] finds nothing
/// against it: a container can name a process `containerd` and give it any `--config` or `--state`. Processes
/// that fail are named in a blind spot and nothing of theirs is read.
pub fn discover(host: &Host, extra_state: &[PathBuf]) -> Discovery {
    let mut d = Discovery {
        instances: extra_state
            .iter()
            .map(|s| Instance {
                pid: None,
                config: None,
                root: PathBuf::from("/var/lib/containerd"),
                state: s.clone(),
                address: s.join("containerd.sock"),
                found_by: "flag",
            })
            .collect(),
        blind_spots: Vec::new(),
    };
    let host_ns = procfs::HostNs::read(host);
    let mut untrusted = Vec::new();
    for pid in procfs::pids(host).unwrap_or_default() {
        let Ok(st) = procfs::stat(host, pid) else {
            continue;
        };
        if st.comm != "containerd" {
            continue;
        }
        let Ok(args) = procfs::cmdline(host, pid) else {
            continue;
        };
        // `containerd publish`, `containerd config ...`: helpers, not a daemon.
        if args.get(1).is_some_and(|a| !a.starts_with(b"-")) {
            continue;
        }
        match procfs::why_untrusted(host, pid, &host_ns, true) {
            Ok(None) => {}
            Ok(Some(why)) => {
                untrusted.push((pid, why));
                continue;
            }
            Err(_) => continue,
        }
        let inst = instance_from_cmdline(host, pid, &args, &mut d.blind_spots);
        if !d.instances.iter().any(|f| f.state == inst.state) {
            d.instances.push(inst);
        }
    }
    d.blind_spots.extend(untrusted_blind_spot(
        "attribution",
        "containerd",
        &untrusted,
    ));
    if d.instances.is_empty() {
        d.instances.push(Instance {
            pid: None,
            config: None,
            root: PathBuf::from("/var/lib/containerd"),
            state: PathBuf::from("/run/containerd"),
            address: PathBuf::from("/run/containerd/containerd.sock"),
            found_by: "default",
        });
    }
    d
}

/// containerd's config is a few KiB; a larger one is not read.
const CONFIG_TOML_LIMIT: u64 = 1 << 20;

fn instance_from_cmdline(
    host: &Host,
    pid: u32,
    args: &[Vec<u8>],
    blind_spots: &mut Vec<BlindSpot>,
) -> Instance {
    // The value of the first of `names` found, in the order given (long forms first).
    let arg = |names: &[&str]| -> Option<String> {
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        names.iter().find_map(|n| {
            let eq = format!("{n}=");
            args.iter().enumerate().find_map(|(i, a)| {
                if a == n {
                    args.get(i + 1).cloned()
                } else {
                    a.strip_prefix(&eq).map(str::to_string)
                }
            })
        })
    };
    let named = arg(&["--config", "-c"]).map(PathBuf::from);
    let config = named
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/containerd/config.toml"));
    let (config, dirs) = match read_regular(&host.path(&config), CONFIG_TOML_LIMIT) {
        Ok((b, _)) => (Some(config), parse_config(&String::from_utf8_lossy(&b))),
        // No config file at the default path is containerd's own default.
        Err(e) if named.is_none() && crate::host::vanished(&e) => (None, ConfigDirs::default()),
        Err(e) => {
            blind_spots.push(BlindSpot::new(
                "attribution",
                config.display().to_string(),
                format!(
                    "containerd {pid}'s config {e}; its root, state and address are taken from its flags \
                     or containerd's defaults"
                ),
            ));
            (Some(config), ConfigDirs::default())
        }
    };
    let root = arg(&["--root"])
        .or(dirs.root)
        .unwrap_or_else(|| "/var/lib/containerd".into());
    let state = arg(&["--state"])
        .or(dirs.state)
        .unwrap_or_else(|| "/run/containerd".into());
    let address = arg(&["--address", "-a"])
        .or(dirs.grpc_address)
        .unwrap_or_else(|| "/run/containerd/containerd.sock".into());
    Instance {
        pid: Some(pid),
        config,
        root: root.into(),
        state: state.into(),
        address: address.into(),
        found_by: "process",
    }
}

/// The parts of an OCI runtime spec (config.json) that wonk uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Spec {
    pub annotations: HashMap<String, String>,
    pub mounts: Vec<SpecMount>,
    pub root: Option<SpecRoot>,
    pub linux: Option<SpecLinux>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SpecMount {
    pub destination: String,
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub options: Vec<String>,
}

impl SpecMount {
    pub fn is_bind(&self) -> bool {
        self.kind.as_deref() == Some("bind")
            || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SpecRoot {
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SpecLinux {
    pub cgroups_path: Option<String>,
}

/// Parses a config.json.
pub fn parse_spec(data: &[u8]) -> Result<Spec, serde_json::Error> {
    serde_json::from_slice(data)
}

/// A task bundle: one container (or pod sandbox) as containerd laid it out.
#[derive(Debug)]
pub struct Bundle {
    pub id: String,
    /// containerd namespace (`k8s.io` for kubelet's pods).
    pub namespace: String,
    pub dir: PathBuf,
    /// `v2` (io.containerd.runtime.v2.task) or `v1` (io.containerd.runtime.v1.linux).
    pub shim: &'static str,
    pub spec: Spec,
}

impl Bundle {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.spec.annotations.get(key).map(String::as_str)
    }
}

/// A bundle that could not be read, kept so that the user hears about it.
#[derive(Debug)]
pub struct BadBundle {
    pub path: PathBuf,
    pub error: String,
}

/// The most bundles read in one run. A node runs a few hundred containers (kubelet's default is 110 pods).
const MAX_BUNDLES: usize = 4096;
/// The most bytes of config.json read in one run, all bundles together.
const CONFIG_JSON_TOTAL: u64 = 32 << 20;

/// Reads every bundle under the instances' state and root directories, within bounds: at most [`MAX_BUNDLES`]
/// bundles and [`CONFIG_JSON_TOTAL`] bytes of config.json, each at most [`CONFIG_JSON_LIMIT`], and each config.json
/// inode once (containerd never hard-links one; a hard link would make one file count as many). Every directory is
/// opened without following a final symlink and every config.json with [`open_regular_at`], so a FIFO or a device
/// is never opened. What was passed over is reported as bad bundles, with counts.
pub fn load_bundles(host: &Host, instances: &[Instance]) -> (Vec<Bundle>, Vec<BadBundle>) {
    let mut l = Loader::default();
    let mut bases: Vec<&Path> = Vec::new();
    for inst in instances {
        for base in [&inst.state, &inst.root] {
            if !bases.contains(&base.as_path()) {
                bases.push(base);
                l.base(host, base);
            }
        }
    }
    let under = bases
        .iter()
        .map(|b| b.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let path = PathBuf::from(format!("containerd bundles under {under}"));
    for (n, why) in [
        (
            l.over_count,
            format!("wonk reads at most {MAX_BUNDLES} bundles"),
        ),
        (
            l.over_bytes,
            format!("wonk reads at most {CONFIG_JSON_TOTAL} bytes of config.json in all"),
        ),
        (
            l.hard_links,
            "each was a hard link to a config.json already read, which containerd never makes"
                .to_string(),
        ),
    ] {
        if n > 0 {
            l.bad(path.clone(), format!("{n} bundles were not read: {why}"));
        }
    }
    (l.bundles, l.bad)
}

/// [`load_bundles`]' state: what it read, and what it passed over to stay within its bounds.
#[derive(Default)]
struct Loader {
    bundles: Vec<Bundle>,
    bad: Vec<BadBundle>,
    /// (namespace, id) of the bundles read: of several instances' copies, the first is kept.
    seen: std::collections::HashSet<(String, String)>,
    inodes: std::collections::HashSet<(crate::host::resolve::DevNum, u64)>,
    bytes: u64,
    over_count: u64,
    over_bytes: u64,
    hard_links: u64,
}

impl Loader {
    /// The bundles under one state or root directory: `<base>/<runtime dir>/<namespace>/<id>/config.json`.
    fn base(&mut self, host: &Host, base: &Path) {
        let base_fd = match open_dir_at(&rustix::fs::CWD, &host.path(base)) {
            Ok(fd) => fd,
            Err(e) if crate::host::vanished(&e) => return,
            Err(e) => return self.bad(base.to_path_buf(), format!("containerd's directory {e}")),
        };
        for (sub, shim) in [
            ("io.containerd.runtime.v2.task", "v2"),
            ("io.containerd.runtime.v1.linux", "v1"),
        ] {
            let dir = base.join(sub);
            let Some(sub_fd) = self.open_listed(&base_fd, sub.as_ref(), &dir) else {
                continue;
            };
            for ns in dir_names(&sub_fd) {
                let Some(ns) = self.listed(ns, &dir) else {
                    break;
                };
                let ns_path = dir.join(&ns);
                let Some(ns_fd) = self.open_listed(&sub_fd, ns.as_ref(), &ns_path) else {
                    continue;
                };
                let ns = ns.to_string_lossy().into_owned();
                for id in dir_names(&ns_fd) {
                    let Some(id) = self.listed(id, &ns_path) else {
                        break;
                    };
                    self.bundle(&ns_fd, &ns, &id, &ns_path, shim);
                }
            }
        }
    }

    /// One bundle directory `id` in namespace `ns`, whose directory is open as `ns_fd` and shown as `ns_path`.
    fn bundle(
        &mut self,
        ns_fd: &std::os::fd::OwnedFd,
        ns: &str,
        id: &std::ffi::OsStr,
        ns_path: &Path,
        shim: &'static str,
    ) {
        let dir = ns_path.join(id);
        let cfg = dir.join("config.json");
        let key = (ns.to_string(), id.to_string_lossy().into_owned());
        if self.seen.contains(&key) {
            return;
        }
        if self.bundles.len() >= MAX_BUNDLES {
            self.over_count += 1;
            return;
        }
        let opened = open_dir_at(ns_fd, id.as_ref())
            .and_then(|fd| open_regular_at(&fd, "config.json".as_ref(), CONFIG_JSON_LIMIT));
        let (file, ident) = match opened {
            Ok(f) => f,
            Err(e) if crate::host::vanished(&e) => return,
            Err(e) => return self.bad(cfg, e),
        };
        if !self.inodes.insert((ident.dev, ident.ino)) {
            self.hard_links += 1;
            return;
        }
        if self.bytes + ident.size > CONFIG_JSON_TOTAL {
            self.over_bytes += 1;
            return;
        }
        let data = match read_fd_bounded(&file, CONFIG_JSON_LIMIT) {
            Ok(d) => d,
            Err(e) => return self.bad(cfg, e),
        };
        self.bytes += data.len() as u64;
        match parse_spec(&data) {
            Ok(spec) => {
                self.bundles.push(Bundle {
                    id: key.1.clone(),
                    namespace: key.0.clone(),
                    dir,
                    shim,
                    spec,
                });
                self.seen.insert(key);
            }
            Err(e) => self.bad(cfg, e),
        }
    }

    fn bad(&mut self, path: PathBuf, e: impl std::fmt::Display) {
        self.bad.push(BadBundle {
            path,
            error: e.to_string(),
        });
    }

    /// A name from [`dir_names`]; `None` after a listing error, which is reported.
    fn listed(
        &mut self,
        name: std::io::Result<std::ffi::OsString>,
        dir: &Path,
    ) -> Option<std::ffi::OsString> {
        name.map_err(|e| self.bad(dir.to_path_buf(), format!("listing it: {e}")))
            .ok()
    }

    /// Opens a directory found in a listing; `None` when it is gone or not a directory (a stray file is no
    /// bundle), and a bad bundle for any other error.
    fn open_listed(
        &mut self,
        parent: &impl std::os::fd::AsFd,
        name: &Path,
        shown: &Path,
    ) -> Option<std::os::fd::OwnedFd> {
        match open_dir_at(parent, name) {
            Ok(fd) => Some(fd),
            Err(e) if crate::host::vanished(&e) || e.kind() == std::io::ErrorKind::InvalidInput => {
                None
            }
            Err(e) => {
                self.bad(shown.to_path_buf(), e);
                None
            }
        }
    }
}

/// The names in a directory (not `.` and `..`), read as they are used; an error is the last item.
fn dir_names(
    fd: &std::os::fd::OwnedFd,
) -> impl Iterator<Item = std::io::Result<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = Some(rustix::fs::Dir::read_from(fd));
    std::iter::from_fn(move || loop {
        let entry = match dir.as_mut()? {
            Ok(d) => d.next()?,
            Err(e) => Err(*e),
        };
        match entry {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    return Some(Ok(std::ffi::OsStr::from_bytes(name).to_os_string()));
                }
            }
            Err(e) => {
                dir = None;
                return Some(Err(e.into()));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dirs() {
        let cfg = r#"
version = 2
root = "/tmp/ctd/root"   # comment
state = '/tmp/ctd/state'
[grpc]
  address = "/tmp/ctd/c\"d.sock"
[plugins."io.containerd.grpc.v1.cri"]
  root = "/not/this"
"#;
        let d = parse_config(cfg);
        assert_eq!(d.root.as_deref(), Some("/tmp/ctd/root"));
        assert_eq!(d.state.as_deref(), Some("/tmp/ctd/state"));
        assert_eq!(d.grpc_address.as_deref(), Some("/tmp/ctd/c\"d.sock"));
        assert_eq!(parse_config("root = \"unterminated"), ConfigDirs::default());
        assert_eq!(parse_config("[[x\nroot=1"), ConfigDirs::default());
    }

    #[test]
    fn bundle_spec_fixture() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bundle/container/config.json");
        let spec = parse_spec(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(spec.annotations["io.kubernetes.cri.container-name"], "app");
        assert_eq!(
            spec.annotations["io.kubernetes.cri.container-type"],
            "container"
        );
        assert_eq!(
            spec.annotations["io.kubernetes.cri.sandbox-namespace"],
            "shop"
        );
        let data = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/data.txt")
            .unwrap();
        assert!(data.is_bind());
        assert_eq!(data.source.as_deref(), Some("/tmp/data.txt"));
        assert!(!spec
            .mounts
            .iter()
            .find(|m| m.destination == "/proc")
            .unwrap()
            .is_bind());
        assert!(spec
            .linux
            .unwrap()
            .cgroups_path
            .unwrap()
            .contains("kubepods"));
    }

    #[test]
    fn hostile_specs_are_errors_not_panics() {
        assert!(parse_spec(b"{").is_err());
        assert!(parse_spec(b"{\"mounts\": 5}").is_err());
        assert!(parse_spec(&[b'['; 10_000]).is_err());
        assert!(parse_spec(b"{}").unwrap().mounts.is_empty());
    }
}
