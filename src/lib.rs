//! lm-eval-aas: lm-evaluation-harness as a service.

pub mod api;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod client;
pub mod command;
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod k8s;
pub mod lifecycle;
pub mod log_lines;
pub mod metrics;
pub mod model;
pub mod outputs;
pub mod progress;
pub mod results;
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod validate;
