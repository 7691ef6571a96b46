//! Who is asking, and may they: every API request carries a bearer token (`Authorization: Bearer …`, or the
//! access token an OpenShift oauth-proxy forwards), which `Authenticator` turns into a `Caller`; `Authorizer`
//! then answers whether that caller may do one thing (`Access`) — on Kubernetes with the same RBAC that governs
//! `kubectl`. Both remember their answers briefly (`cache`), so a polling client costs no API call per read.

pub mod cache;
mod kubernetes;
pub mod token_file;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
pub use kubernetes::Reviewer;
use token_file::TokenFile;

/// The API group and resource every request is authorized against.
pub const GROUP: &str = "lm-eval-aas.io";
pub const RESOURCE: &str = "evaluations";

/// An authenticated identity: everything the API server said of a token, so that a SubjectAccessReview asks
/// about the same subject the token is — a scoped token (OpenShift's `scopes.authorization.openshift.io` in
/// `extra`, e.g. oauth-proxy's `user:info`) is authorized with its scopes, not with its user's full rights.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    /// The TokenReview's `uid` (none for a token file or anonymous).
    pub uid: Option<String>,
    /// The TokenReview's `extra`, passed on unchanged.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    pub const ANONYMOUS: &str = "system:anonymous";

    pub fn anonymous() -> Self {
        Self { user: Self::ANONYMOUS.into(), groups: vec!["system:unauthenticated".into()], ..Self::default() }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user == Self::ANONYMOUS
    }
}

/// A verb, as RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    Get,
    List,
    Patch,
    Update,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Patch => "patch",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One thing a caller wants to do: `verb` on `resource` (of `group`) in `namespace`, optionally a
/// subresource and a named object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: Verb,
    pub namespace: String,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub name: Option<String>,
    /// A non-resource URL (`/metrics`) instead of a resource.
    pub path: Option<&'static str>,
}

impl Access {
    /// `verb` on evaluations in `namespace`.
    pub fn evaluations(verb: Verb, namespace: &str) -> Self {
        Self {
            verb,
            namespace: namespace.to_string(),
            group: GROUP,
            resource: RESOURCE,
            subresource: None,
            name: None,
            path: None,
        }
    }

    /// `get` on a non-resource URL such as `/metrics` (as kube-rbac-proxy authorizes it).
    pub fn non_resource(path: &'static str) -> Self {
        Self { path: Some(path), group: "", resource: "", ..Self::evaluations(Verb::Get, "") }
    }

    /// `get` on a subresource of evaluations (`log`, `results`) in `namespace`.
    pub fn evaluation_part(subresource: &'static str, namespace: &str) -> Self {
        Self { subresource: Some(subresource), ..Self::evaluations(Verb::Get, namespace) }
    }

    /// `get` on the core object `resource` named `name` in `namespace` (a Secret or claim a request names).
    pub fn object(resource: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            verb: Verb::Get,
            namespace: namespace.to_string(),
            group: "",
            resource,
            subresource: None,
            name: Some(name.to_string()),
            path: None,
        }
    }

    /// What a denial says: "user alice cannot create evaluations.lm-eval-aas.io in namespace team-b".
    pub fn denial(&self, caller: &Caller) -> String {
        if let Some(path) = self.path {
            return format!("user {} cannot {} {path}", caller.user, self.verb.as_str());
        }
        let resource =
            if self.group.is_empty() { self.resource.to_string() } else { format!("{}.{}", self.resource, self.group) };
        let resource = match self.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let object = self.name.as_ref().map(|n| format!(" {n:?}")).unwrap_or_default();
        format!("user {} cannot {} {resource}{object} in namespace {}", caller.user, self.verb.as_str(), self.namespace)
    }
}

/// How requests are authenticated (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Bearer tokens checked with a TokenReview; requests authorized with SubjectAccessReviews.
    Kubernetes,
    /// Bearer tokens whose SHA-256 hashes a file lists with their users and groups.
    TokenFile,
    /// No authentication: every request is anonymous and allowed.
    None,
}

pub enum Authenticator {
    Anonymous,
    TokenFile(TokenFile),
    Kubernetes(Arc<Reviewer>),
}

pub enum Authorizer {
    /// Every authenticated caller may do everything (no authentication, or a token file on the local backend).
    AllowAll,
    /// SubjectAccessReviews, so RBAC decides.
    Kubernetes(Arc<Reviewer>),
}

/// Authentication and authorization of the API.
pub struct Auth {
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    /// The header an authenticating proxy forwards the user's access token in (OpenShift's oauth-proxy:
    /// `X-Forwarded-Access-Token`).
    pub forwarded_token_header: Option<HeaderName>,
}

/// How long answers are remembered, and how many.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub token_ttl: Duration,
    pub access_ttl: Duration,
    pub entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self { token_ttl: Duration::from_secs(60), access_ttl: Duration::from_secs(10), entries: 10_000 }
    }
}

impl Auth {
    /// No authentication, everything allowed.
    pub fn none() -> Self {
        Self { authenticator: Authenticator::Anonymous, authorizer: Authorizer::AllowAll, forwarded_token_header: None }
    }

    /// The caller a request's headers identify; `401` without a token, or with one that is not valid.
    pub async fn authenticate(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let token = || bearer_token(headers, self.forwarded_token_header.as_ref());
        match &self.authenticator {
            Authenticator::Anonymous => Ok(Caller::anonymous()),
            Authenticator::TokenFile(file) => file
                .caller(&token_hash(token()?))
                .cloned()
                .ok_or_else(|| ApiError::Unauthenticated("the bearer token is not valid".into())),
            Authenticator::Kubernetes(reviewer) => reviewer.authenticate(token()?).await,
        }
    }

    /// `Ok` when `caller` may do `access`; `403` naming what is missing otherwise (and an audit line).
    pub async fn authorize(&self, caller: &Caller, access: Access) -> ApiResult<()> {
        if self.allows(caller, &access).await? {
            return Ok(());
        }
        audit(caller, access.verb.as_str(), &access.namespace, access.name.as_deref(), "denied");
        Err(ApiError::Denied { field: None, detail: access.denial(caller) })
    }

    /// Whether `caller` may do `access`, without the audit line or the error (for lists over namespaces).
    pub async fn allows(&self, caller: &Caller, access: &Access) -> ApiResult<bool> {
        match &self.authorizer {
            Authorizer::AllowAll => Ok(true),
            Authorizer::Kubernetes(reviewer) => reviewer.allows(caller, access).await,
        }
    }

    /// Whether the request's caller may do `access`, answered from memory: `Some(true)` only when the token and
    /// the permission are both remembered and good; the hot read path answers by itself only then.
    pub fn remembered_allows(&self, headers: &HeaderMap, access: Access) -> Option<bool> {
        let token = || bearer_token(headers, self.forwarded_token_header.as_ref()).ok();
        match (&self.authenticator, &self.authorizer) {
            (Authenticator::Anonymous, _) => Some(true),
            (Authenticator::TokenFile(file), Authorizer::AllowAll) => {
                Some(file.caller(&token_hash(token()?)).is_some())
            }
            (Authenticator::TokenFile(file), Authorizer::Kubernetes(reviewer)) => {
                let caller = file.caller(&token_hash(token()?))?;
                reviewer.remembered_decision(caller, access)
            }
            (Authenticator::Kubernetes(reviewer), _) => reviewer.remembered_allows(token()?, access),
        }
    }
}

/// The request's bearer token: `Authorization: Bearer …`, else the forwarded access token header. Bytes: a
/// token is only hashed on the hot path, and checking a kilobyte of JWT for text on every read costs.
pub fn bearer_token<'h>(headers: &'h HeaderMap, forwarded: Option<&HeaderName>) -> ApiResult<&'h [u8]> {
    let missing = || ApiError::Unauthenticated("send a bearer token: Authorization: Bearer <token>".into());
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.as_bytes();
        let scheme_ok = value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ");
        let token = if scheme_ok { value[7..].trim_ascii() } else { &[][..] };
        if token.is_empty() {
            return Err(ApiError::Unauthenticated("the Authorization header must be Bearer <token>".into()));
        }
        return Ok(token);
    }
    let forwarded = forwarded.and_then(|name| headers.get(name)).map(|v| v.as_bytes().trim_ascii());
    forwarded.filter(|t| !t.is_empty()).ok_or_else(missing)
}

/// The SHA-256 of a token: what is remembered and what a token file lists, never the token.
pub fn token_hash(token: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(token.as_ref()).into()
}

/// One audit line (a JSON log line with `--log-format json`): who did what to which evaluation, and how it went.
pub fn audit(caller: &Caller, verb: &str, namespace: &str, evaluation: Option<&str>, outcome: &str) {
    tracing::info!(
        target: "audit",
        user = %caller.user,
        verb,
        namespace,
        evaluation = evaluation.unwrap_or(""),
        outcome,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_denial_names_user_verb_resource_and_namespace() {
        let alice = Caller { user: "alice".into(), ..Caller::default() };
        assert_eq!(
            Access::evaluations(Verb::Create, "team-b").denial(&alice),
            "user alice cannot create evaluations.lm-eval-aas.io in namespace team-b"
        );
        assert_eq!(
            Access::evaluation_part("log", "team-a").denial(&alice),
            "user alice cannot get evaluations.lm-eval-aas.io/log in namespace team-a"
        );
        assert_eq!(
            Access::object("secrets", "team-a", "llm-key").denial(&alice),
            "user alice cannot get secrets \"llm-key\" in namespace team-a"
        );
        assert_eq!(Access::non_resource("/metrics").denial(&alice), "user alice cannot get /metrics");
    }

    #[test]
    fn the_token_comes_from_authorization_or_the_forwarded_header() {
        let forwarded = HeaderName::from_static("x-forwarded-access-token");
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer_token(&headers, Some(&forwarded)), Err(ApiError::Unauthenticated(_))));
        headers.insert(&forwarded, HeaderValue::from_static("from-proxy"));
        assert_eq!(bearer_token(&headers, Some(&forwarded)).ok(), Some(&b"from-proxy"[..]));
        assert!(bearer_token(&headers, None).is_err(), "only when the header is configured");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer_token(&headers, Some(&forwarded)).ok(), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer_token(&headers, None).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer_token(&headers, None).is_err());
    }
}
