//! A connection's socket as hyper sees it, shared with the task that serves the connection, so that task can
//! still answer when hyper gives up on a request (its headers stalled) and hyper's own error responses can be
//! made problem documents like every other error.
//!
//! hyper answers a request it cannot parse (400, 414, 431) by itself, with an empty body and before any route
//! sees it. Those responses are the only ones without an `x-request-id` header (every response of the router
//! carries one), which is how they are recognised on their way out and replaced by a problem document.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{PROBLEM_JSON, http_layer_problem};

pub struct SharedSocket {
    stream: Arc<TcpStream>,
    /// Bytes read since the last response began: a request is on its way when this is not zero.
    read_since_response: Arc<AtomicUsize>,
    /// A replacement response still to be written, and how much of it has been.
    replacement: Option<(Vec<u8>, usize)>,
}

/// The serving task's handle on the same socket.
#[derive(Clone)]
pub struct SocketHandle {
    stream: Arc<TcpStream>,
    read_since_response: Arc<AtomicUsize>,
}

impl SharedSocket {
    pub fn new(stream: TcpStream) -> (Self, SocketHandle) {
        let stream = Arc::new(stream);
        let read_since_response = Arc::new(AtomicUsize::new(0));
        let handle =
            SocketHandle { stream: Arc::clone(&stream), read_since_response: Arc::clone(&read_since_response) };
        (Self { stream, read_since_response, replacement: None }, handle)
    }

    fn poll_write_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacement.as_mut() {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            *written += ready!(when_ready(&self.stream, cx, Interest::WRITABLE, |s| s.try_write(&bytes[*written..])))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_through(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_replacement(cx))?;
        self.read_since_response.store(0, Ordering::Relaxed);
        when_ready(&self.stream, cx, Interest::WRITABLE, |s| s.try_write_vectored(bufs))
    }
}

impl SocketHandle {
    /// Whether part of a request has arrived that no response has answered yet.
    pub fn request_under_way(&self) -> bool {
        self.read_since_response.load(Ordering::Relaxed) > 0
    }

    /// Writes `response` as it is, giving up after `patience`; the connection is closing anyway.
    pub async fn write_last(&self, response: &[u8], patience: std::time::Duration) {
        let write = async {
            let mut written = 0;
            while written < response.len() {
                self.stream.writable().await?;
                match self.stream.try_write(&response[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(patience, write).await;
    }
}

impl AsyncRead for SharedSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = ready!(when_ready(&self.stream, cx, Interest::READABLE, |s| s.try_read(buf.initialize_unfilled())))?;
        buf.advance(n);
        self.read_since_response.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_replacement(cx))?;
        if let Some(status) = automatic_response(buf) {
            self.replacement = Some((problem_response(status, &[("connection", "close")]), 0));
            self.read_since_response.store(0, Ordering::Relaxed);
            ready!(self.poll_write_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        self.poll_write_through(cx, &[io::IoSlice::new(buf)])
    }

    /// hyper writes a response's head and body in one `writev`, without copying the body; its own error
    /// responses are a head alone, in one buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs {
            [one] => self.poll_write(cx, one),
            _ => self.poll_write_through(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_replacement(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_replacement(cx))?;
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write))
    }
}

/// Runs `attempt` once the socket is ready for `interest`, again whenever that readiness was stale.
fn when_ready<T>(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    mut attempt: impl FnMut(&TcpStream) -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        if interest.is_writable() {
            ready!(stream.poll_write_ready(cx))?;
        } else {
            ready!(stream.poll_read_ready(cx))?;
        }
        match attempt(stream) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}

/// The status of a response hyper wrote by itself: an error status without `x-request-id`, head only.
fn automatic_response(buf: &[u8]) -> Option<StatusCode> {
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.1 5")) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let ours = head.lines().any(|line| line.to_ascii_lowercase().starts_with("x-request-id:"));
    (status >= 400 && !ours && head_end + 4 == buf.len()).then(|| StatusCode::from_u16(status).ok()).flatten()
}

/// A whole HTTP/1.1 response carrying the problem document of `status`.
pub fn problem_response(status: StatusCode, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::to_vec(&http_layer_problem(status)).unwrap_or_default();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_heads_without_our_request_id_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_response(hyper_431), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let ours = b"HTTP/1.1 404 Not Found\r\nx-request-id: 1\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_response(ours), None);
        assert_eq!(automatic_response(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        let response = String::from_utf8(problem_response(StatusCode::URI_TOO_LONG, &[])).expect("text");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(serde_json::from_str::<serde_json::Value>(body).expect("json")["status"], 414);
    }
}
