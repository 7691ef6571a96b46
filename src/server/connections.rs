//! Accepting and serving connections, bounded: HTTP/1.1 with graceful shutdown, a cap on connections (the
//! rest get `503` + `Retry-After`), a read timeout for request heads (`408`), and back-off when `accept`
//! fails (one log line per streak of failures, not one per failure).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::socket::GuardedSocket;
use crate::api::PeerAddr;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are told to retry.
    pub max_connections: usize,
    /// How long a request's head (and, in the extractor, its body) may take to arrive.
    pub read_timeout: Duration,
}

pub struct ShutdownTiming {
    /// Keep serving (with /readyz failing) this long after the signal.
    pub delay: Duration,
    /// Then give in-flight requests this long.
    pub timeout: Duration,
}

/// How long `accept` waits after a failure: doubling from the first to the last.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));
/// The most a request's head may be: larger heads are answered `431`, targets over 64 KiB `414`.
const MAX_HEAD_BYTES: usize = 96 * 1024;
/// How long a connection beyond the cap may take to send the head it is answered `503` for.
const BUSY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until SIGTERM or SIGINT, then drains as `timing` says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: crate::api::Service,
    shutdown_tx: watch::Sender<bool>,
    timing: ShutdownTiming,
    limits: ConnectionLimits,
) {
    let graceful = GracefulShutdown::new();
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut signal = std::pin::pin!(shutdown_signal());
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut failures = AcceptFailures::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => {
                        failures.recovered();
                        accepted
                    }
                    Err(e) => {
                        tokio::time::sleep(failures.failed(&e)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match Arc::clone(&places).try_acquire_owned() {
                    Ok(place) => {
                        let connection = serve_one(stream, peer, app.clone(), &graceful, limits.read_timeout);
                        tokio::spawn(async move {
                            connection.await;
                            drop(place);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(turn_away(stream));
                    }
                }
            }
            () = &mut signal, if closing.is_none() => {
                // From here /readyz fails and log streams end; new connections are still served until the delay is over.
                let _ = shutdown_tx.send(true);
                tracing::info!(delay_seconds = timing.delay.as_secs(), "shutting down: no longer ready");
                closing = Some(Box::pin(tokio::time::sleep(timing.delay)));
            }
            () = async { closing.as_mut().expect("guarded").await }, if closing.is_some() => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timing.timeout) => tracing::warn!("shutdown timeout reached with requests still open"),
    }
}

/// One connection: HTTP/1.1 (what clients, ingresses and probes speak; a plain HTTP/1 connection holds far
/// less memory than one that must first sniff for HTTP/2), the client's address in every request.
fn serve_one(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: crate::api::Service,
    graceful: &GracefulShutdown,
    read_timeout: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let (socket, progress) = GuardedSocket::new(stream);
    let app = app.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        progress.dispatched();
        // Only changes are attributed to a creator; reads stay free of the allocation.
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(socket), TowerToHyperService::new(app));
    let connection = graceful.watch(connection);
    async move {
        // A head that stalled is answered 408 as the socket is dropped.
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// A connection beyond the cap: its request is answered `503` + `Retry-After`, and it is closed.
async fn turn_away(stream: tokio::net::TcpStream) {
    let busy = hyper::service::service_fn(|_request| async {
        let problem = crate::error::http_layer_problem(StatusCode::SERVICE_UNAVAILABLE);
        let response = axum::http::Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", crate::error::PROBLEM_JSON)
            .header("retry-after", "1")
            .header("connection", "close")
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .body(axum::body::Body::from(serde_json::to_vec(&problem).unwrap_or_default()))
            .expect("a well-formed response");
        Ok::<_, std::convert::Infallible>(response)
    });
    let (socket, _) = GuardedSocket::new(stream);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(BUSY_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(socket), busy);
    let _ = connection.await;
}

/// A streak of failing `accept`s: logged when it starts and when it ends, waited out with back-off between.
#[derive(Default)]
pub(super) struct AcceptFailures {
    streak: u64,
    pause: Duration,
}

impl AcceptFailures {
    pub(super) fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.streak == 0 {
            tracing::warn!(error = %error, "accept failed; backing off until it works again (e.g. out of file descriptors)");
            self.pause = ACCEPT_BACKOFF.0;
        } else {
            self.pause = (self.pause * 2).min(ACCEPT_BACKOFF.1);
        }
        self.streak += 1;
        self.pause
    }

    pub(super) fn recovered(&mut self) {
        if self.streak > 0 {
            tracing::info!(failures = self.streak, "accept works again");
            self.streak = 0;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_log_once_per_streak() {
        let mut failures = AcceptFailures::default();
        let error = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..12).map(|_| failures.failed(&error)).collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF.0);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert_eq!(*pauses.last().expect("pause"), ACCEPT_BACKOFF.1);
        failures.recovered();
        assert_eq!((failures.streak, failures.failed(&error)), (0, ACCEPT_BACKOFF.0));
    }
}
