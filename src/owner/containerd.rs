//! containerd's state on disk: where it keeps it, and what each task bundle's `config.json` says.
//!
//! Offline first: the state and root directories come from each running containerd's command line and
//! `--config` file (`root`, `state`, `[grpc] address`), falling back to `/run/containerd` and
//! `/var/lib/containerd`. Bundles are `<state>/io.containerd.runtime.v2.task/<ns>/<id>/` (shim v2) and
//! `<state>/io.containerd.runtime.v1.linux/<ns>/<id>/` (shim v1). The CRI plugin writes the pod's identity into
//! each bundle's OCI spec as `io.kubernetes.cri.*` annotations.

use crate::host::{procfs, read_bounded, Host};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A config.json is a few KiB; a larger one than this is not read.
const CONFIG_JSON_LIMIT: u64 = 4 << 20;

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

/// Finds every containerd on the node. `extra_state` adds state directories named on the command line.
pub fn discover(host: &Host, extra_state: &[PathBuf]) -> Vec<Instance> {
    let mut found: Vec<Instance> = extra_state
        .iter()
        .map(|s| Instance {
            pid: None,
            config: None,
            root: PathBuf::from("/var/lib/containerd"),
            state: s.clone(),
            address: s.join("containerd.sock"),
            found_by: "flag",
        })
        .collect();
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
        let inst = instance_from_cmdline(host, pid, &args);
        if !found.iter().any(|f| f.state == inst.state) {
            found.push(inst);
        }
    }
    if found.is_empty() {
        found.push(Instance {
            pid: None,
            config: None,
            root: PathBuf::from("/var/lib/containerd"),
            state: PathBuf::from("/run/containerd"),
            address: PathBuf::from("/run/containerd/containerd.sock"),
            found_by: "default",
        });
    }
    found
}

fn instance_from_cmdline(host: &Host, pid: u32, args: &[Vec<u8>]) -> Instance {
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
    let config = arg(&["--config", "-c"]).map(PathBuf::from).or_else(|| {
        let default = PathBuf::from("/etc/containerd/config.toml");
        host.path(&default).exists().then_some(default)
    });
    let dirs = config
        .as_ref()
        .and_then(|c| read_bounded(&host.path(c), 1 << 20).ok())
        .map(|b| parse_config(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
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

/// Reads every bundle under the instances' state and root directories.
pub fn load_bundles(host: &Host, instances: &[Instance]) -> (Vec<Bundle>, Vec<BadBundle>) {
    let mut bundles = Vec::new();
    let mut bad = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for inst in instances {
        for base in [&inst.state, &inst.root] {
            for (sub, shim) in [
                ("io.containerd.runtime.v2.task", "v2"),
                ("io.containerd.runtime.v1.linux", "v1"),
            ] {
                let dir = base.join(sub);
                for (ns, id, bundle_dir) in two_level_dirs(&host.path(&dir)) {
                    let cfg = bundle_dir.join("config.json");
                    let data = match read_bounded(&cfg, CONFIG_JSON_LIMIT) {
                        Ok(d) => d,
                        Err(e) if crate::host::vanished(&e) => continue,
                        Err(e) => {
                            bad.push(BadBundle {
                                path: cfg,
                                error: e.to_string(),
                            });
                            continue;
                        }
                    };
                    if !seen.insert((ns.clone(), id.clone())) {
                        continue;
                    }
                    match parse_spec(&data) {
                        Ok(spec) => bundles.push(Bundle {
                            id,
                            namespace: ns,
                            dir: dir.join(
                                bundle_dir
                                    .strip_prefix(host.path(&dir))
                                    .unwrap_or(Path::new("")),
                            ),
                            shim,
                            spec,
                        }),
                        Err(e) => bad.push(BadBundle {
                            path: cfg,
                            error: e.to_string(),
                        }),
                    }
                }
            }
        }
    }
    (bundles, bad)
}

/// `(ns, id, path)` for every `dir/<ns>/<id>` directory.
fn two_level_dirs(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(nss) = std::fs::read_dir(dir) else {
        return out;
    };
    for ns in nss.flatten() {
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            if id.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((
                    ns.file_name().to_string_lossy().into_owned(),
                    id.file_name().to_string_lossy().into_owned(),
                    id.path(),
                ));
            }
        }
    }
    out
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
