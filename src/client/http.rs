//! The service's REST API as the CLI calls it: bearer token, namespace, CA file, and retries that honour
//! `Retry-After` (429, 503) or back off (unreachable). Errors carry the exit code they mean.

use std::time::Duration;

use serde_json::Value;

use super::Exit;

/// A failure, with the exit code it means and what to print.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The service's base URL.
    #[arg(long, env = "LMEVAL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// A bearer token (on Kubernetes, e.g. `kubectl create token NAME`).
    #[arg(long, env = "LMEVAL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The namespace of the evaluations (default: the server's default namespace).
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// PEM CA certificates to trust for the server (besides the system's).
    #[arg(long, global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one request may take, in seconds.
    #[arg(long, default_value_t = 30, global = true)]
    pub request_timeout_seconds: u64,
    /// How many times a request is retried when the server is unreachable or says to retry.
    #[arg(long, default_value_t = 5, global = true)]
    pub retries: u32,
}

pub struct Client {
    http: reqwest::Client,
    args: ClientArgs,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let usage = |e: String| Failure::new(Exit::Refused, e);
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).map_err(|e| usage(format!("--ca-file {}: {e}", path.display())))?;
            for certificate in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| usage(format!("--ca-file: {e}")))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| usage(e.to_string()))?;
        Ok(Self { http, args: args.clone() })
    }

    /// The evaluations' collection URL, optionally with `rest` (`/{id}/logs`).
    pub fn url(&self, rest: &str) -> String {
        let base = self.args.server.trim_end_matches('/');
        match &self.args.namespace {
            Some(namespace) => format!("{base}/api/v1/namespaces/{namespace}/evaluations{rest}"),
            None => format!("{base}/api/v1/evaluations{rest}"),
        }
    }

    /// Sends what `make` builds, retrying as the server says (or with back-off when it cannot be reached);
    /// a 4xx is the server's refusal, printed with the field it names.
    pub async fn send(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, Failure> {
        let mut pause = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = make(&self.http);
            if let Some(token) = &self.args.token {
                request = request.bearer_auth(token);
            }
            if let Some(timeout) = timeout.or(Some(Duration::from_secs(self.args.request_timeout_seconds))) {
                request = request.timeout(timeout);
            }
            let last = attempt > self.args.retries;
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) && !last => {
                    let wait = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map_or(pause, Duration::from_secs);
                    eprintln!("the server says to retry in {} s ({})", wait.as_secs(), response.status());
                    tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                }
                Ok(response) => return Err(refusal(response).await),
                Err(e) if !last && (e.is_connect() || e.is_timeout()) => {
                    eprintln!("cannot reach {}: {e}; retrying in {} ms", self.args.server, pause.as_millis());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    return Err(Failure::new(Exit::Unreachable, format!("cannot reach {}: {e}", self.args.server)));
                }
            }
        }
    }

    pub async fn json(&self, make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = self.send(make, None).await?;
        response.json().await.map_err(|e| Failure::new(Exit::Unreachable, format!("an answer that is not JSON: {e}")))
    }
}

/// The server's problem document as one line: "422 invalid-field: limit: must be … (field limit)".
async fn refusal(response: reqwest::Response) -> Failure {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let detail = problem["detail"].as_str().map_or_else(|| text.chars().take(500).collect(), str::to_string);
    let field = problem["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
    let exit = if status.as_u16() == 404 || status.is_client_error() { Exit::Refused } else { Exit::Unreachable };
    Failure::new(exit, format!("{} {detail}{field}", status.as_u16()))
}
