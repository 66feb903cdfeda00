//! A minimal HTTP/1.1 server on one thread for `/metrics` and `/healthz`: one request per connection, GET only,
//! bounded reads and timeouts, so a slow or hostile client cannot pin the agent.

use super::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Serves until `stopped()` says so (checked every 200 ms).
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, stopped: &dyn Fn() -> bool) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "cannot make the listener non-blocking");
        return;
    }
    while !stopped() {
        match listener.accept() {
            Ok((conn, peer)) => {
                if let Err(e) = handle(conn, &metrics) {
                    tracing::debug!(%peer, error = %e, "request failed");
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

fn handle(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if n == buf.len() {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
            );
        }
        let r = conn.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let openmetrics = lines.any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") if openmetrics => respond(
            &mut conn,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.openmetrics(),
        ),
        ("GET", "/metrics") => respond(
            &mut conn,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics.text(),
        ),
        ("GET", "/healthz") => respond(&mut conn, "200 OK", "text/plain", "ok\n"),
        ("GET", _) => respond(
            &mut conn,
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n",
        ),
        _ => respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
