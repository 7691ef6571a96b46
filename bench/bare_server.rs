//! The ceiling for `scripts/bench-local`: a bare axum server that answers every status read with the same
//! bytes the service would, and does nothing else (no state, no middleware, no limits).
//!
//!     cargo run --release --example bare_server -- PORT EVALUATION.json

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("usage: bare_server PORT EVALUATION.json");
    let body = bytes::Bytes::from(std::fs::read(args.next().expect("usage: bare_server PORT EVALUATION.json"))?);
    let app = Router::new().route(
        "/api/v1/evaluations/{id}",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
