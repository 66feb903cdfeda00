//! Driving `wonk agent` from a test: a free port, the agent as a child killed by its pid when dropped, plain
//! HTTP GETs of /metrics and one series' value, a directory filled until its htree index is full, a ghost
//! bind mount in a pod, and a real Prometheus (Debian's package) with its query API.

use super::{Pod, Scratch};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process we started, killed by its recorded pid when dropped.
pub struct Proc {
    pub child: Option<Child>,
    pub name: &'static str,
}

impl Proc {
    /// SIGTERM, then waits; returns the exit code and how long it took.
    pub fn term(&mut self) -> (Option<i32>, Duration) {
        let mut c = self.child.take().unwrap();
        let t = Instant::now();
        // SAFETY: kill(2) with the pid of our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait().unwrap();
        (st.code(), t.elapsed())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether it is still running (not exited; reaps it if it has).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|st| st.is_none()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            eprintln!("killing {} (pid {})", self.name, c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `wonk agent ARGS`, its stderr (the log) into `log`.
pub fn agent(args: &[&str], log: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .arg("agent")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child: Some(child),
        name: "wonk agent",
    }
}

/// A started agent on a staged node: its process, port, `127.0.0.1:PORT` and log file.
pub struct Staged {
    pub proc: Proc,
    pub port: u16,
    pub listen: String,
    pub log: PathBuf,
}

/// `wonk agent` with every interval at 1 s, kubelet's root at `kubelet_root` and `s`'s containerd state, plus
/// `extra`; returns once every check has run.
pub fn staged_agent(s: &Scratch, kubelet_root: &Path, extra: &[&str]) -> Staged {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = s.path("agent.log");
    let root = kubelet_root.display().to_string();
    let state = s.s("state");
    let mut args = vec![
        "--listen",
        &listen,
        "--interval",
        "1",
        "--kubelet-root",
        &root,
        "--containerd-state",
        &state,
    ];
    args.extend_from_slice(extra);
    let proc = agent(&args, &log);
    wait_metrics(port, 20, "first runs", |m| {
        value(m, "wonk_check_runs_total", &[("check", "ghosts")]).is_some_and(|v| v >= 1.0)
    });
    Staged {
        proc,
        port,
        listen,
        log,
    }
}

/// GET over plain HTTP/1.0 (no chunked replies); returns status line and body. Connecting and each read give up
/// after 10 s.
pub fn get(port: u16, target: &str, accept: &str) -> std::io::Result<(String, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        c,
        "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// The values of every series `name` whose labels include every pair of `labels`.
pub fn values(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The value of the series `name` whose labels include every pair of `labels`, if exactly one does.
pub fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits = values(metrics, name, labels);
    (hits.len() == 1).then(|| hits[0])
}

/// Polls until `cond` holds on /metrics, or fails after `secs` with the last body.
pub fn wait_metrics(port: u16, secs: u64, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok((_, body)) = get(port, "/metrics", "text/plain") {
            if cond(&body) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{what}: not seen within {secs} s; last /metrics:\n{last}");
}

/// Creates 250-byte names in `dir` until a create fails with ENOSPC; returns how many were created.
pub fn fill_to_enospc(dir: &Path) -> usize {
    for i in 0..200_000usize {
        if let Err(e) = std::fs::File::create(dir.join(format!("{i:0>250}"))) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return i;
        }
    }
    panic!("no ENOSPC after 200,000 creates");
}

/// A file of this repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Whether `tool` is installed; skips (or fails with CI=true) otherwise.
pub fn have(tool: &str, test: &str) -> bool {
    if Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {tool} (Debian package prometheus), and CI=true");
    }
    eprintln!("skipping {test}: {tool} is not installed (apt-get install prometheus)");
    false
}

/// The pod uid of [`stage_ghost`]'s pod (shop/web-0).
pub const GHOST_UID: &str = "6f1c2b3a-0000-4d5e-8f90-aabbccddeeff";

/// The sandbox id of that pod.
pub fn ghost_sandbox() -> String {
    "d".repeat(64)
}

/// Stages a ghost file mount in a pod (namespace shop, pod web-0, container app) and returns the sleeping pid.
pub fn stage_ghost(s: &mut Scratch) -> u32 {
    stage_ghost_named(s, "data.txt")
}

/// [`stage_ghost`] with the mounted file named `name` (any bytes but `/`, NUL and `'`): `root/NAME`, from
/// `host/NAME`, which is then replaced.
pub fn stage_ghost_named(s: &mut Scratch, name: &str) -> u32 {
    let uid = GHOST_UID;
    let cid = "c".repeat(56) + "0badcafe";
    let sid = ghost_sandbox();
    let (host, root) = (s.s(&format!("host/{name}")), s.s(&format!("root/{name}")));
    s.write(&format!("host/{name}"), "v1\n");
    s.write(&format!("root/{name}"), "");
    let pid = s.spawn_ns(&format!("mount --bind '{host}' '{root}'"));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    let mounts = json!([{"destination": root, "type": "bind",
                          "source": host, "options": ["rbind"]}]);
    s.bundle(
        "state",
        &cid,
        &Pod::new("shop", "web-0", uid, &sid)
            .container("app")
            .cgroup(&cg)
            .mounts(mounts)
            .spec(),
    );
    s.bundle(
        "state",
        &sid,
        &Pod::new("shop", "web-0", uid, &sid).sandbox(),
    );
    s.write("host/new.tmp", "v2\n");
    s.sh(&format!("mv -f '{}' '{host}'", s.s("host/new.tmp")));
    pid
}

/// Prometheus with `cfg`, its data and log under `s`; killed by its pid when the returned `Proc` is dropped.
pub fn prometheus(s: &Scratch, cfg: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", s.s("prom/data")))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("prom/log")).unwrap())
        .spawn()
        .unwrap();
    (
        Proc {
            child: Some(child),
            name: "prometheus",
        },
        port,
    )
}

/// An instant query through Prometheus's HTTP API; null when it did not answer.
pub fn prom_query(port: u16, q: &str) -> serde_json::Value {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    get(port, &format!("/api/v1/query?query={enc}"), "*/*")
        .ok()
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Prometheus's alerts (`/api/v1/alerts`); null when it did not answer.
pub fn prom_alerts(port: u16) -> serde_json::Value {
    get(port, "/api/v1/alerts", "*/*")
        .ok()
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}
