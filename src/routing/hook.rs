//! The external auth hook: `POST` the login to an HTTPS endpoint, which
//! answers allow or deny, and with allow the upstream, root, tenant and
//! limits of the user.
//!
//! Request (JSON): `{"user", "password", "client_ip", "listener", "tls"}`,
//! with `Authorization: Bearer <token>` when a token is configured.
//! Answer: HTTP 200 with `{"allow": true, "upstream": "files", "root":
//! "/home/alice", "tenant": "acme", "upstream_user": "alice",
//! "download_rate": "1 MiB/s", "upload_rate": "1 MiB/s", "max_sessions": 2}`
//! (all but `allow` optional when a route supplies them) or `{"allow":
//! false, "reason": "..."}`. Anything else (another status, a timeout, a
//! body that is not such JSON) is a failure: the login is refused with 421
//! and never falls through to a weaker rule.
//!
//! Answers may be reused for `cache`: keyed by a salted SHA-256 of the
//! credentials, client address and listener, so the table holds no
//! password; errors are never cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::AuthHookConfig;

/// Largest answer read from the hook.
const MAX_ANSWER: usize = 64 * 1024;
/// Cached answers kept at most.
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct HookRequest<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub client_ip: IpAddr,
    pub listener: &'a str,
    /// Whether the control connection is encrypted.
    pub tls: bool,
}

/// What the hook granted; unset fields come from the route, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub upstream: Option<String>,
    pub root: Option<String>,
    pub tenant: Option<String>,
    pub upstream_user: Option<String>,
    pub download_rate: Option<String>,
    pub upload_rate: Option<String>,
    pub max_sessions: Option<usize>,
}

/// The answer as sent. Flat, without `#[serde(flatten)]`, because serde
/// ignores `deny_unknown_fields` through a flattened struct, and a
/// misspelt field (`"max_session"`) must be an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    allow: bool,
    reason: Option<String>,
    upstream: Option<String>,
    root: Option<String>,
    tenant: Option<String>,
    upstream_user: Option<String>,
    download_rate: Option<String>,
    upload_rate: Option<String>,
    max_sessions: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Grant),
    Deny(Option<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the auth hook cannot be reached: {0}")]
    Unreachable(String),
    #[error("the auth hook answered HTTP {0}")]
    Status(u16),
    #[error("the auth hook's answer is not usable: {0}")]
    BadAnswer(String),
}

/// Parses the body of a 200 answer.
pub fn parse_answer(body: &[u8]) -> Result<Verdict, HookError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| HookError::BadAnswer(e.to_string()))?;
    Ok(if answer.allow {
        Verdict::Allow(Grant {
            upstream: answer.upstream,
            root: answer.root,
            tenant: answer.tenant,
            upstream_user: answer.upstream_user,
            download_rate: answer.download_rate,
            upload_rate: answer.upload_rate,
            max_sessions: answer.max_sessions,
        })
    } else {
        Verdict::Deny(answer.reason)
    })
}

/// Asks the hook about one login.
pub async fn ask(hook: &AuthHookConfig, request: &HookRequest<'_>) -> Result<Verdict, HookError> {
    let body = serde_json::to_vec(request).map_err(|e| HookError::BadAnswer(e.to_string()))?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&hook.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
    if let Some(token) = &hook.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let request = builder
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| HookError::Unreachable(e.to_string()))?;
    let exchange = async {
        let response = hook
            .client
            .send(request)
            .await
            .map_err(|e| HookError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            hook.client.discard(response.into_body()).await;
            return Err(HookError::Status(status.as_u16()));
        }
        let body = hook
            .client
            .read_body(response.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| HookError::BadAnswer(e.to_string()))?;
        parse_answer(&body)
    };
    tokio::time::timeout(hook.timeout, exchange)
        .await
        .map_err(|_| HookError::Unreachable(format!("no answer within {:?}", hook.timeout)))?
}

/// Answers reused for the same credentials, client and listener.
pub struct HookCache {
    salt: [u8; 32],
    answers: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl Default for HookCache {
    fn default() -> Self {
        HookCache {
            salt: rand::random(),
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl HookCache {
    fn key(&self, request: &HookRequest<'_>) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.salt);
        for part in [request.user, request.password, request.listener] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(request.client_ip.to_string().as_bytes());
        hash.finalize().into()
    }

    /// The answer cached for `request`, unless it expired.
    pub fn get(&self, request: &HookRequest<'_>, now: Instant) -> Option<Verdict> {
        let key = self.key(request);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        match answers.get(&key) {
            Some((until, verdict)) if *until > now => Some(verdict.clone()),
            Some(_) => {
                answers.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, request: &HookRequest<'_>, verdict: Verdict, until: Instant) {
        let key = self.key(request);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= MAX_CACHED {
            let now = Instant::now();
            answers.retain(|_, (until, _)| *until > now);
            if answers.len() >= MAX_CACHED {
                answers.clear();
            }
        }
        answers.insert(key, (until, verdict));
    }

    /// Asks the hook unless a cached answer exists; caches what it answers.
    pub async fn ask(
        &self,
        hook: &AuthHookConfig,
        request: &HookRequest<'_>,
    ) -> Result<Verdict, HookError> {
        let now = Instant::now();
        if hook.cache.is_some()
            && let Some(verdict) = self.get(request, now)
        {
            return Ok(verdict);
        }
        let verdict = ask(hook, request).await?;
        if let Some(cache) = hook.cache {
            self.put(
                request,
                verdict.clone(),
                now + cache.min(Duration::from_secs(24 * 3600)),
            );
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(user: &'a str, password: &'a str) -> HookRequest<'a> {
        HookRequest {
            user,
            password,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            listener: "main",
            tls: false,
        }
    }

    #[test]
    fn answers_parse_into_verdicts() {
        let allow = parse_answer(
            br#"{"allow": true, "upstream": "files", "root": "/home/a", "max_sessions": 2}"#,
        )
        .unwrap();
        assert_eq!(
            allow,
            Verdict::Allow(Grant {
                upstream: Some("files".into()),
                root: Some("/home/a".into()),
                max_sessions: Some(2),
                ..Grant::default()
            })
        );
        let deny = parse_answer(br#"{"allow": false, "reason": "disabled"}"#).unwrap();
        assert_eq!(deny, Verdict::Deny(Some("disabled".into())));
        assert!(parse_answer(b"yes").is_err());
        assert!(
            parse_answer(br#"{"upstream": "files"}"#).is_err(),
            "allow is required"
        );
        assert!(
            parse_answer(br#"{"allow": true, "admin": true}"#).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn the_cache_keys_on_every_credential_and_expires() {
        let cache = HookCache::default();
        let now = Instant::now();
        cache.put(
            &request("a", "pw"),
            Verdict::Deny(None),
            now + Duration::from_secs(60),
        );
        assert_eq!(
            cache.get(&request("a", "pw"), now),
            Some(Verdict::Deny(None))
        );
        assert_eq!(cache.get(&request("a", "other"), now), None);
        assert_eq!(cache.get(&request("b", "pw"), now), None);
        assert_eq!(
            cache.get(&request("a", "pw"), now + Duration::from_secs(61)),
            None
        );
        // Length-prefixed parts: ("ab", "c") is not ("a", "bc").
        cache.put(
            &request("ab", "c"),
            Verdict::Deny(None),
            now + Duration::from_secs(60),
        );
        assert_eq!(cache.get(&request("a", "bc"), now), None);
    }
}
