//! TokenReviews and SubjectAccessReviews: the API server says who a token is and what they may do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::cache::Remembered;
use super::{Access, CacheLimits, Caller, token_hash};
use crate::error::{ApiError, ApiResult};

/// What a token was found to be: a caller, or why it is not one.
type TokenAnswer = Result<Arc<Caller>, String>;

pub struct Reviewer {
    client: Client,
    audiences: Vec<String>,
    limits: CacheLimits,
    timeout: Duration,
    tokens: Remembered<[u8; 32], TokenAnswer>,
    decisions: Remembered<(Arc<Caller>, Access), bool>,
}

impl Reviewer {
    pub fn new(client: Client, audiences: Vec<String>, limits: CacheLimits, timeout: Duration) -> Self {
        Self {
            client,
            audiences,
            limits,
            timeout,
            tokens: Remembered::new(limits.entries),
            decisions: Remembered::new(limits.entries),
        }
    }

    pub async fn authenticate(&self, token: &[u8]) -> ApiResult<Caller> {
        // Never remembered past the token's own expiry (read only when it is reviewed).
        let lifetime = |_: &TokenAnswer| self.limits.token_ttl.min(remaining_life(token).unwrap_or(Duration::MAX));
        let answer = self.tokens.get_or_fetch(&token_hash(token), || self.review_token(token), lifetime).await?;
        answer.map(|caller| Caller::clone(&caller)).map_err(ApiError::Unauthenticated)
    }

    pub async fn allows(&self, caller: &Caller, access: &Access) -> ApiResult<bool> {
        let key = (Arc::new(caller.clone()), access.clone());
        let ttl = self.limits.access_ttl;
        self.decisions.get_or_fetch(&key, || self.review_access(caller, access), |_| ttl).await
    }

    /// Whether `caller` may do `access`, when that is remembered (no I/O).
    pub fn remembered_decision(&self, caller: &Caller, access: Access) -> Option<bool> {
        self.decisions.get(&(Arc::new(caller.clone()), access), Instant::now())
    }

    /// Whether the caller of `token` may do `access`, when both answers are remembered (no I/O).
    pub fn remembered_allows(&self, token: &[u8], access: Access) -> Option<bool> {
        let caller = self.tokens.get(&token_hash(token), Instant::now())?.ok()?;
        self.decisions.get(&(caller, access), Instant::now())
    }

    async fn review_token(&self, token: &[u8]) -> ApiResult<TokenAnswer> {
        let Ok(token) = std::str::from_utf8(token) else { return Ok(Err("the bearer token is not text".into())) };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = self.call(api.create(&PostParams::default(), &review)).await?;
        Ok(token_answer(reviewed.status.unwrap_or_default()))
    }

    async fn review_access(&self, caller: &Caller, access: &Access) -> ApiResult<bool> {
        let review = access_review(caller, access);
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let reviewed = self.call(api.create(&PostParams::default(), &review)).await?;
        Ok(reviewed.status.is_some_and(|s| s.allowed && !s.denied.unwrap_or(false)))
    }

    async fn call<T>(&self, what: impl std::future::Future<Output = kube::Result<T>>) -> ApiResult<T> {
        let unavailable = |detail: String| ApiError::Unavailable { detail, retry_after_seconds: 5 };
        match tokio::time::timeout(self.timeout, what).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => Err(ApiError::internal(format!(
                "the service account may not review tokens or access (bind it to system:auth-delegator): {}",
                status.message
            ))),
            Ok(Err(e)) => Err(unavailable(format!("the Kubernetes API server could not check the request: {e}"))),
            Err(_) => Err(unavailable("the Kubernetes API server did not check the request in time".into())),
        }
    }
}

/// What a TokenReview's status makes of a token: the caller, with everything the API server said of it
/// (`uid`, `extra`: a scoped token stays scoped in every review of its access), or why it is not one.
fn token_answer(status: TokenReviewStatus) -> TokenAnswer {
    let user = status.user.unwrap_or_default();
    match (status.authenticated, user.username) {
        (Some(true), Some(name)) => Ok(Arc::new(Caller {
            user: name,
            groups: user.groups.unwrap_or_default(),
            uid: user.uid.filter(|uid| !uid.is_empty()),
            extra: user.extra.unwrap_or_default(),
        })),
        _ => Err(match status.error {
            // The API server's reason names the token's defect, never the token.
            Some(error) if !error.is_empty() => format!("the bearer token is not valid: {error}"),
            _ => "the bearer token is not valid".to_string(),
        }),
    }
}

/// The SubjectAccessReview asking whether `caller` may do `access`: the subject exactly as its TokenReview
/// described it (user, groups, uid, extra), so the authorizer applies a token's scopes as it would to the
/// token itself.
fn access_review(caller: &Caller, access: &Access) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            uid: caller.uid.clone(),
            extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
            non_resource_attributes: access.path.map(|path| NonResourceAttributes {
                path: Some(path.to_string()),
                verb: Some(access.verb.as_str().to_string()),
            }),
            resource_attributes: access.path.is_none().then(|| ResourceAttributes {
                namespace: Some(access.namespace.clone()),
                verb: Some(access.verb.as_str().to_string()),
                group: Some(access.group.to_string()),
                resource: Some(access.resource.to_string()),
                subresource: access.subresource.map(str::to_string),
                name: access.name.clone(),
                ..ResourceAttributes::default()
            }),
        },
        ..SubjectAccessReview::default()
    }
}

/// How long a JWT has left by its own `exp` claim (unverified: it only shortens how long an answer is kept).
fn remaining_life(token: &[u8]) -> Option<Duration> {
    let payload = std::str::from_utf8(token).ok()?.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("exp")?.as_i64()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Some(Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::{Access, access_review, remaining_life, token_answer};
    use crate::auth::Verb;
    use base64::Engine;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn jwt(claims: &serde_json::Value) -> String {
        let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", encode(br#"{"alg":"RS256"}"#), encode(claims.to_string().as_bytes()))
    }

    #[test]
    fn a_token_is_remembered_no_longer_than_it_lives() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let life = remaining_life(jwt(&serde_json::json!({"exp": now + 30})).as_bytes()).expect("life");
        assert!((29..=30).contains(&life.as_secs()), "{life:?}");
        assert_eq!(remaining_life(jwt(&serde_json::json!({"exp": now - 5})).as_bytes()).map(|d| d.as_secs()), Some(0));
        assert_eq!(remaining_life(b"opaque-token"), None);
        assert_eq!(remaining_life(jwt(&serde_json::json!({"sub": "x"})).as_bytes()), None);
    }

    #[test]
    fn an_access_review_asks_about_the_token_as_reviewed_scopes_and_all() {
        // oauth-proxy's token for `user:info` only: the scope travels in `extra`, and must reach the authorizer.
        let scopes = "scopes.authorization.openshift.io";
        let extra = std::collections::BTreeMap::from([(scopes.to_string(), vec!["user:info".to_string()])]);
        let status = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("alice".into()),
                groups: Some(vec!["system:authenticated".into()]),
                uid: Some("a1b2-c3".into()),
                extra: Some(extra.clone()),
            }),
            ..TokenReviewStatus::default()
        };
        let caller = token_answer(status).expect("authenticated");
        let review = serde_json::to_value(access_review(&caller, &Access::evaluations(Verb::List, "team-a")))
            .expect("serialises");
        assert_eq!(
            review["spec"],
            serde_json::json!({
                "user": "alice",
                "groups": ["system:authenticated"],
                "uid": "a1b2-c3",
                "extra": {scopes: ["user:info"]},
                "resourceAttributes": {
                    "namespace": "team-a",
                    "verb": "list",
                    "group": "lm-eval-aas.io",
                    "resource": "evaluations",
                },
            })
        );
        // A caller the same user without the scope is another caller: decisions are not shared between them.
        let unscoped = crate::auth::Caller { extra: Default::default(), ..(*caller).clone() };
        assert_ne!(unscoped, *caller);
        let review = serde_json::to_value(access_review(&unscoped, &Access::non_resource("/metrics"))).expect("json");
        assert_eq!(review["spec"].get("extra"), None, "no extra is sent as none, not as an empty map");
        assert_eq!(review["spec"]["nonResourceAttributes"], serde_json::json!({"path": "/metrics", "verb": "get"}));
        assert!(
            token_answer(TokenReviewStatus { error: Some("expired".into()), ..Default::default() })
                .is_err_and(|e| e.contains("expired"))
        );
    }
}
