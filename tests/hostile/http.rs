//! The agent's HTTP server and textfile writer under attack: anyone who can reach the listening address can open
//! connections and send what it likes; whoever can write in the `--textfile` directory can plant names there.

use crate::common::agent::{free_port, get, Proc};
use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The server's cap on connections from one address (src/agent/http.rs).
const MAX_PER_PEER: usize = 8;

/// `wonk agent` with long intervals on `port`, its log in `log`.
fn agent(port: u16, extra: &[&str], log: &Path) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", &listen, "--interval", "3600"];
    args.extend_from_slice(extra);
    let p = crate::common::agent::agent(&args, log);
    wait_up(port);
    p
}

fn wait_up(port: u16) {
    let t = Instant::now();
    while get(port, "/healthz", "*/*").is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `src` (any of 127/8 is this host's), so the
/// server sees distinct peers.
fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    // SAFETY: a new socket; its descriptor is handed to TcpStream, which owns and closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (sa(src, 0), sa([127, 0, 0, 1], port));
    // SAFETY: bind(2) and connect(2) with sockaddr_in values that live across the calls.
    unsafe {
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0,
            "bind {src:?}: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
    }
    stream
}

/// One request as kubelet's probe makes it: each read gives up after 1 s (kubelet's default probe timeout).
/// Returns the whole reply, or the error that ended it.
fn probe(src: [u8; 4], port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut c = connect_from(src, port);
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    c.set_write_timeout(Some(Duration::from_secs(1)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut s = Vec::new();
    c.read_to_end(&mut s)?;
    Ok(String::from_utf8_lossy(&s).into_owned())
}

/// Attack: idle connections (more than the per-peer cap, from three addresses) and a client dripping one header
/// byte every 1.5 s are held open while kubelet probes `/healthz` with a 1 s timeout. Before, the server took one
/// connection at a time and each read waited 2 s: the first idle connection stalled every probe. Now each
/// connection has its own thread, so every probe answers.
#[test]
fn healthz_answers_while_idle_and_dripping_clients_hold_connections() {
    let s = Scratch::new("hostile-http-idle");
    let port = free_port();
    let _agent = agent(port, &[], &s.path("agent.log"));
    let mut idle = Vec::new();
    for src in [[127, 0, 0, 1], [127, 0, 0, 3], [127, 0, 0, 4]] {
        for _ in 0..MAX_PER_PEER + 4 {
            idle.push(connect_from(src, port));
        }
    }
    let mut drip = connect_from([127, 0, 0, 5], port);
    let dripper = std::thread::spawn(move || {
        for b in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n"
            .iter()
            .cycle()
            .take(8)
        {
            if drip.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1500));
        }
    });
    for i in 0..12 {
        let r = probe([127, 0, 0, 2], port, "GET", "/healthz");
        let r = r.unwrap_or_else(|e| panic!("probe {i} failed: {e}"));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "probe {i}: {r:?}");
        assert!(r.ends_with("\r\n\r\nok\n"), "probe {i}: {r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    dripper.join().unwrap();
    drop(idle);
}

/// Attack: a client sends its request head one byte every 1.5 s, never finishing it. Before, each read had its own
/// 2 s timeout, so the drip held the connection (and the whole server) for as long as it went on. Now the head has
/// a deadline of its own: the server answers 408 and closes while the client is still dripping.
#[test]
fn a_dripping_client_is_cut_off_by_the_request_deadline() {
    let s = Scratch::new("hostile-http-drip");
    let port = free_port();
    let _agent = agent(port, &[], &s.path("agent.log"));
    let mut c = connect_from([127, 0, 0, 1], port);
    c.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut reply = Vec::new();
    // Twenty bytes at 1.5 s take 30 s, six times the 5 s deadline.
    for b in b"GET /healthz HTTP/1.1".iter().take(20) {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        match c.read_to_end(&mut reply) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{reply:?}"
    );
}

/// Attack: one peer opens more connections than it may hold and leaves them idle. Before, the extra connections
/// queued behind the first (and so did every probe). Now a connection beyond the per-peer cap is answered 503 at
/// once, and other peers' `/healthz` still answers.
#[test]
fn connections_over_the_cap_are_refused_at_once_and_healthz_still_answers() {
    let s = Scratch::new("hostile-http-cap");
    let port = free_port();
    let _agent = agent(port, &["--log-level", "debug"], &s.path("agent.log"));
    let held: Vec<_> = (0..MAX_PER_PEER)
        .map(|_| connect_from([127, 0, 0, 1], port))
        .collect();
    // The server admits connections in accept order; let it take the held ones before the extra one.
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect_from([127, 0, 0, 1], port);
    extra
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut reply = Vec::new();
    extra.read_to_end(&mut reply).unwrap_or_else(|e| {
        panic!(
            "the connection over the cap was not answered: {e} {}",
            std::fs::read_to_string(s.path("agent.log")).unwrap()
        )
    });
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{reply:?}"
    );
    let r = probe([127, 0, 0, 2], port, "GET", "/healthz").unwrap();
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r:?}");
    drop(held);
    // Once the held connections are gone, the peer is served again.
    let t = Instant::now();
    loop {
        // Until the server has seen the held connections close, it may still refuse this peer: with a 503, or,
        // when it closes before our request is written, a broken pipe or a reset.
        let r = probe([127, 0, 0, 1], port, "GET", "/healthz").unwrap_or_else(|e| e.to_string());
        if r.starts_with("HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HEAD (kubelet's and load balancers' probes may use it) answers with the headers GET would give and no body;
/// other methods get 405 with `Allow`. Before, HEAD got 405.
#[test]
fn head_answers_headers_without_a_body_and_other_methods_get_405() {
    let s = Scratch::new("hostile-http-head");
    let port = free_port();
    let _agent = agent(port, &[], &s.path("agent.log"));
    for path in ["/healthz", "/metrics"] {
        let get = probe([127, 0, 0, 1], port, "GET", path).unwrap();
        let head = probe([127, 0, 0, 1], port, "HEAD", path).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        let (h, body) = head.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "", "HEAD {path} sent a body");
        let (_, get_body) = get.split_once("\r\n\r\n").unwrap();
        let len: usize = h
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        if path == "/healthz" {
            assert_eq!(len, get_body.len());
        } else {
            assert!(len > 0);
        }
    }
    let r = probe([127, 0, 0, 1], port, "POST", "/metrics").unwrap();
    assert!(
        r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{r:?}"
    );
    assert!(r.contains("\r\nAllow: GET, HEAD\r\n"), "{r:?}");
}

/// Attack: whoever can write in the `--textfile` directory plants symlinks at the name of the agent's temporary
/// file and at `wonk.prom`, pointing at victim files. Before, the temporary name was `.wonk.prom.<pid>` and it was
/// opened following symlinks: the agent (root) overwrote the victim with its metrics. Now the temporary file has
/// an unpredictable name and is created `O_EXCL|O_NOFOLLOW`, and the rename replaces the `wonk.prom` link itself:
/// both victims are unchanged and `wonk.prom` is a regular file.
///
/// The agent runs as pid 1 of a new pid namespace so that its old temporary name, `.wonk.prom.1`, is known before
/// it starts.
#[test]
fn textfile_is_not_written_through_planted_symlinks() {
    require_root!();
    let s = Scratch::new("hostile-textfile");
    let dir = s.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let victim = s.write("victim", "precious\n");
    let victim2 = s.write("victim2", "also precious\n");
    std::os::unix::fs::symlink(&victim, dir.join(".wonk.prom.1")).unwrap();
    std::os::unix::fs::symlink(&victim2, dir.join("wonk.prom")).unwrap();
    // The user names the directory through a symlink of their own: that one is followed (docs/OUTPUT.md).
    let given = s.path("textfile-link");
    std::os::unix::fs::symlink(&dir, &given).unwrap();
    let port = free_port();
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(env!("CARGO_BIN_EXE_wonk"))
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--interval", "3600", "--textfile"])
        .arg(&given)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let _agent = Proc {
        child: Some(child),
        name: "unshare --pid wonk agent",
    };
    wait_up(port);
    let prom = dir.join("wonk.prom");
    let t = Instant::now();
    // Until the agent wrote its file, or wrote through a link.
    while !std::fs::symlink_metadata(&prom).is_ok_and(|m| m.is_file())
        && std::fs::read_to_string(&victim).unwrap() == "precious\n"
        && std::fs::read_to_string(&victim2).unwrap() == "also precious\n"
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no wonk.prom written; log:\n{}",
            std::fs::read_to_string(s.path("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_to_string(&victim2).unwrap(),
        "also precious\n"
    );
    assert!(std::fs::read_to_string(&prom).unwrap().contains("wonk_"));
    assert!(std::fs::symlink_metadata(dir.join(".wonk.prom.1"))
        .unwrap()
        .file_type()
        .is_symlink());
}
