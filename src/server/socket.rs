//! A connection's socket as hyper sees it. It answers what hyper would leave unanswered or bare:
//! - hyper answers a request it cannot parse (400, 414, 431) by itself, with an empty body and before any route
//!   sees it. Those responses are the only ones without an `x-request-id` header (every response of the router
//!   carries one), which is how they are recognised on their way out and replaced by a problem document.
//! - hyper closes a connection whose request head stalls past its read timeout without a word. The socket knows
//!   whether part of a request had arrived that nothing answered; if so, it sends `408` as it is dropped.
//!
//! Reads and writes are the `TcpStream`'s own, so the socket costs no system call the stream would not make.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{PROBLEM_JSON, http_layer_problem};

pub struct GuardedSocket {
    stream: TcpStream,
    /// Bytes of a request that has not been answered or handed to the service yet.
    unanswered: Arc<AtomicUsize>,
    /// A replacement response still to be written, and how much of it has been.
    replacement: Option<(Vec<u8>, usize)>,
}

/// The serving side's hold on a connection: it says when a request has been handed to the service.
#[derive(Clone)]
pub struct RequestProgress(Arc<AtomicUsize>);

impl RequestProgress {
    /// A whole request head has arrived and is being served: nothing is waiting on the socket's side.
    pub fn dispatched(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl GuardedSocket {
    pub fn new(stream: TcpStream) -> (Self, RequestProgress) {
        let unanswered = Arc::new(AtomicUsize::new(0));
        let progress = RequestProgress(Arc::clone(&unanswered));
        (Self { stream, unanswered, replacement: None }, progress)
    }

    fn poll_write_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacement.as_mut() {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            *written += ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for GuardedSocket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if read > 0 {
            self.unanswered.fetch_add(read, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_replacement(cx))?;
        self.unanswered.store(0, Ordering::Relaxed);
        if let Some(status) = automatic_response(buf) {
            self.replacement = Some((problem_response(status, &[("connection", "close")]), 0));
            ready!(self.poll_write_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    /// hyper writes a response's head and body in one `writev`, without copying the body; its own error
    /// responses are a head alone, in one buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let [one] = bufs {
            return self.poll_write(cx, one);
        }
        ready!(self.poll_write_replacement(cx))?;
        self.unanswered.store(0, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Drop for GuardedSocket {
    /// Part of a request arrived and nothing answered it: its head stalled (or the server is stopping). Best
    /// effort, without waiting: the response is small enough for the socket's send buffer.
    fn drop(&mut self) {
        if self.unanswered.load(Ordering::Relaxed) > 0 {
            let _ = self.stream.try_write(&problem_response(StatusCode::REQUEST_TIMEOUT, &[("connection", "close")]));
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
    (!ours && head_end + 4 == buf.len()).then(|| StatusCode::from_u16(status).ok()).flatten()
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
