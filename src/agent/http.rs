//! A minimal HTTP/1.1 server for `/metrics` and `/healthz`: one request per connection, GET and HEAD, a thread per
//! connection up to a cap, so a slow or hostile client cannot pin the agent or starve kubelet's probe.
//!
//! Anyone who can reach the listening address is a client. Each connection gets its own thread, up to
//! [`MAX_CONNECTIONS`] in all and [`MAX_PER_PEER`] from one IP address; a connection beyond either cap is answered
//! 503 at once (one non-blocking write) and closed, never queued. The whole request head must arrive within
//! [`HEAD_DEADLINE`] (a deadline for the request, not a timeout per read, so dripping a byte at a time does not
//! extend it) and fit in [`MAX_HEAD`] bytes; the whole reply must be taken within [`WRITE_DEADLINE`]. `/healthz`
//! takes no lock: it never waits behind a `/metrics` render, which waits for the checks updating the registry.

use super::metrics::Metrics;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once, from all peers.
pub const MAX_CONNECTIONS: usize = 128;
/// Connections served at once from one IP address, so one peer cannot take every slot.
pub const MAX_PER_PEER: usize = 8;
/// The time a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// The time a client has to take the whole reply.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// The largest request head read; a larger one is answered 431.
pub const MAX_HEAD: usize = 8192;

/// Connections being served, in all and per peer address.
#[derive(Default)]
struct Live {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in [`Live`], given back when dropped (when its thread ends, or with the
/// closure of a thread that could not be started).
struct Slot {
    live: Arc<Mutex<Live>>,
    peer: IpAddr,
}

impl Slot {
    /// A slot for a connection from `peer`, if neither cap is reached.
    fn take(live: &Arc<Mutex<Live>>, peer: IpAddr) -> Option<Slot> {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        let mine = l.per_peer.get(&peer).copied().unwrap_or(0);
        if l.total >= MAX_CONNECTIONS || mine >= MAX_PER_PEER {
            return None;
        }
        l.total += 1;
        l.per_peer.insert(peer, mine + 1);
        Some(Slot {
            live: live.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut l = self.live.lock().unwrap_or_else(|e| e.into_inner());
        l.total -= 1;
        if let Some(n) = l.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                l.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Serves until `stopped()` says so (checked every 200 ms).
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, stopped: &dyn Fn() -> bool) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "cannot make the listener non-blocking");
        return;
    }
    let live = Arc::new(Mutex::new(Live::default()));
    while !stopped() {
        match listener.accept() {
            Ok((conn, peer)) => {
                let Some(slot) = Slot::take(&live, peer.ip()) else {
                    tracing::debug!(%peer, "too many connections; answered 503");
                    refuse(conn);
                    continue;
                };
                let m = metrics.clone();
                let spawned = std::thread::Builder::new()
                    .name("http-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let mut conn = conn;
                        let r = handle(&mut conn, &m);
                        // The slot is free before the client sees the close, so a client that connects again
                        // right after its reply is never refused for its own previous connection.
                        drop(slot);
                        drop(conn);
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "request failed");
                        }
                    });
                // A thread that could not start drops its closure: the connection closes, the slot is given back.
                if let Err(e) = spawned {
                    tracing::warn!(%peer, error = %e, "cannot start a thread for a connection");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(&listener, 200),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answers 503 with one non-blocking write (a fresh socket's send buffer takes it whole) and closes.
fn refuse(mut conn: TcpStream) {
    let _ = conn.set_nonblocking(true);
    let _ = conn.write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\
          Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n",
    );
}

/// Waits until a connection is pending or `ms` have passed: accepts at once, and still sees a stop in time.
fn wait_readable(listener: &TcpListener, ms: i32) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that we own, for a descriptor that outlives the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// What is left until `deadline`, or None once it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads the request head (up to an empty line, or the end of the stream) by `HEAD_DEADLINE`. Err(status) when
/// the client was too slow or sent too much.
fn read_head(conn: &mut TcpStream) -> std::io::Result<Result<Vec<u8>, &'static str>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let ended =
        |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n");
    while !ended(&buf[..n]) {
        if n == buf.len() {
            return Ok(Err("431 Request Header Fields Too Large"));
        }
        let Some(wait) = left(deadline) else {
            return Ok(Err("408 Request Timeout"));
        };
        conn.set_read_timeout(Some(wait))?;
        match conn.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(e) if timed_out(&e) => return Ok(Err("408 Request Timeout")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(Ok(buf))
}

fn handle(conn: &mut TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let head = match read_head(conn)? {
        Ok(h) if h.is_empty() => return Ok(()),
        Ok(h) => h,
        Err(status) => {
            let body = format!("{status}\n");
            return respond(conn, status, "text/plain", &body, true);
        }
    };
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let openmetrics = lines.any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    let path = target.split('?').next().unwrap_or("");
    let with_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            return respond(
                conn,
                "405 Method Not Allowed",
                "text/plain",
                "GET or HEAD only\n",
                true,
            )
        }
    };
    let w = with_body;
    match path {
        "/healthz" => respond(conn, "200 OK", "text/plain", "ok\n", w),
        "/metrics" if openmetrics => respond(
            conn,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.openmetrics(),
            w,
        ),
        "/metrics" => respond(
            conn,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics.text(),
            w,
        ),
        _ => respond(
            conn,
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n",
            w,
        ),
    }
}

/// Writes the reply (the body only if `with_body`; HEAD gets the same headers) by `WRITE_DEADLINE`, or gives up.
fn respond(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut done = 0;
    while done < out.len() {
        let Some(wait) = left(deadline) else {
            return Err(std::io::ErrorKind::TimedOut.into());
        };
        conn.set_write_timeout(Some(wait))?;
        match conn.write(&out[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
