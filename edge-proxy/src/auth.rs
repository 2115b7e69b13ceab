//! Who a request acts as, decided in one place for `/mux`, pass-through and exec/attach: the
//! origin check, the bearer token (an `Authorization: Bearer` header or the
//! `base64url.bearer.authorization.k8s.io.` subprotocol) and the auth mode. Every refusal is a
//! Kubernetes `Status` answered before any upgrade.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

use crate::identity::Identity;
use crate::mux::TOKEN_PROTOCOL_PREFIX;

/// How requests without a token are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request must carry a bearer token, used as its upstream identity.
    Token,
    /// A request without a token uses the cluster's (the proxy's) credentials.
    #[default]
    Proxy,
}

/// The auth settings of a proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSettings {
    /// Token or proxy mode.
    pub mode: AuthMode,
    /// Let proxy mode listen on a non-loopback address (anyone who reaches it acts as the proxy).
    pub allow_anonymous_remote: bool,
}

impl AuthSettings {
    /// Refuses proxy mode on a non-loopback address without the opt-in, naming the settings to
    /// change.
    pub fn check_listen(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        if self.mode == AuthMode::Proxy && !listen.ip().is_loopback() && !self.allow_anonymous_remote {
            return Err(format!(
                "refusing to listen on {listen} with auth.mode: proxy: anyone who reaches it would act with the clusters' credentials; \
                 set auth.mode: token (--auth-mode token), listen on loopback, or set auth.allowAnonymousRemote: true (--allow-anonymous-remote)"
            ));
        }
        Ok(())
    }
}

/// Why a request was refused: always answered as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub code: u16,
    /// The Status reason (`Unauthorized`, `BadRequest`, `Forbidden`).
    pub reason: &'static str,
    /// What went wrong, for people (never contains a token).
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        crate::passthrough::status_response(self.code, self.reason, &self.message)
    }
}

/// Whether the request's `Origin` (if any) is allowed: listed, or the same host as the request.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|a| a == origin || a == "*") {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The request's bearer token: `Authorization: Bearer`, else the token subprotocol. A token
/// subprotocol that is not base64url of UTF-8 is a refusal, never "no token".
pub fn request_token(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        // An empty bearer is no token, as the API server reads it.
        let token = token.trim();
        return Ok((!token.is_empty()).then(|| token.to_owned()));
    }
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim);
    let Some(encoded) = offered.filter_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX)).next() else { return Ok(None) };
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok().and_then(|bytes| String::from_utf8(bytes).ok());
    match decoded {
        Some(token) if !token.is_empty() => Ok(Some(token)),
        _ => Err(Refusal { code: 400, reason: "BadRequest", message: format!("the {TOKEN_PROTOCOL_PREFIX}… subprotocol must carry a base64url-encoded token") }),
    }
}

/// Admits a request: its origin must be allowed and, in token mode, it must carry a token.
/// Returns the identity it acts as upstream.
pub fn admit(headers: &HeaderMap, allowed_origins: &[String], auth: &AuthSettings) -> Result<Identity, Refusal> {
    if !origin_allowed(headers, allowed_origins) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "refused a request from a disallowed origin");
        return Err(Refusal { code: 403, reason: "Forbidden", message: "origin not allowed".to_owned() });
    }
    match (request_token(headers)?, auth.mode) {
        (Some(token), _) => Ok(Identity::token(&token)),
        (None, AuthMode::Proxy) => Ok(Identity::Proxy),
        (None, AuthMode::Token) => Err(Refusal {
            code: 401,
            reason: "Unauthorized",
            message: format!("this proxy requires a bearer token (Authorization: Bearer, or the {TOKEN_PROTOCOL_PREFIX}<base64url> subprotocol)"),
        }),
    }
}

/// The identity a request acts as: [`admit`] against the settings in force, as an extractor, so
/// every handler that needs one gets it the same way, and a refusal is answered before the
/// handler (and any upgrade) runs.
pub struct Admitted(pub Identity);

impl axum::extract::FromRequestParts<std::sync::Arc<crate::AppState>> for Admitted {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &std::sync::Arc<crate::AppState>) -> Result<Self, Refusal> {
        let settings = app.settings();
        admit(&parts.headers, &settings.allowed_origins, &settings.auth).map(Admitted)
    }
}

/// The cluster a `/clusters/{cluster}/{api path}` request names, looked up in the snapshot in
/// force, and the API path after it. Extract it after [`Admitted`], so that a request that may
/// not use the proxy learns nothing of which clusters exist.
pub struct Target {
    /// The cluster's name, percent-decoded.
    pub name: String,
    /// The cluster.
    pub cluster: std::sync::Arc<crate::clusters::Cluster>,
    /// The API path after `/clusters/{cluster}`, still percent-encoded.
    pub rest: String,
}

impl axum::extract::FromRequestParts<std::sync::Arc<crate::AppState>> for Target {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &std::sync::Arc<crate::AppState>) -> Result<Self, Refusal> {
        let Some((name, rest)) = crate::passthrough::split_cluster_path(parts.uri.path()) else {
            return Err(Refusal { code: 404, reason: "NotFound", message: "the path must be /clusters/{cluster}/{api path}".to_owned() });
        };
        match app.snapshot().clusters.get(&name) {
            Some(cluster) => Ok(Target { name, cluster, rest }),
            None => Err(Refusal { code: 404, reason: "NotFound", message: format!("cluster \"{name}\" not found") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["http://localhost:5173".to_owned()];
        assert!(origin_allowed(&headers(&[]), &allowed), "non-browser clients send no Origin");
        assert!(origin_allowed(&headers(&[("origin", "http://localhost:5173"), ("host", "127.0.0.1:8080")]), &allowed));
        assert!(origin_allowed(&headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]), &[]));
        assert!(!origin_allowed(&headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")]), &allowed));
        assert!(!origin_allowed(&headers(&[("origin", "http://127.0.0.1:8081"), ("host", "127.0.0.1:8080")]), &[]));
    }

    #[test]
    fn tokens() {
        assert_eq!(request_token(&headers(&[("authorization", "Bearer abc")])), Ok(Some("abc".into())));
        let h = headers(&[("sec-websocket-protocol", "kubemux.v1, base64url.bearer.authorization.k8s.io.YWJj")]);
        assert_eq!(request_token(&h), Ok(Some("abc".into())));
        assert_eq!(request_token(&headers(&[("sec-websocket-protocol", "kubemux.v1")])), Ok(None));
        let bad = headers(&[("sec-websocket-protocol", "kubemux.v1, base64url.bearer.authorization.k8s.io.!!!")]);
        assert_eq!(request_token(&bad).unwrap_err().code, 400, "an undecodable token is refused, not ignored");
    }

    #[test]
    fn modes() {
        let token = AuthSettings { mode: AuthMode::Token, allow_anonymous_remote: false };
        assert_eq!(admit(&headers(&[]), &[], &token).unwrap_err().code, 401);
        assert_eq!(admit(&headers(&[("authorization", "Bearer  ")]), &[], &token).unwrap_err().code, 401, "an empty bearer is no token");
        assert_eq!(admit(&headers(&[("authorization", "Bearer t")]), &[], &token), Ok(Identity::token("t")));
        assert_eq!(admit(&headers(&[]), &[], &AuthSettings::default()), Ok(Identity::Proxy));
        let evil = headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")]);
        assert_eq!(admit(&evil, &[], &AuthSettings::default()).unwrap_err().code, 403);
    }

    #[test]
    fn proxy_mode_off_loopback_needs_the_opt_in() {
        let remote = "0.0.0.0:8080".parse().unwrap();
        let error = AuthSettings::default().check_listen(remote).unwrap_err();
        assert!(error.contains("auth.allowAnonymousRemote"), "{error}");
        assert!(AuthSettings { allow_anonymous_remote: true, ..AuthSettings::default() }.check_listen(remote).is_ok());
        assert!(AuthSettings { mode: AuthMode::Token, allow_anonymous_remote: false }.check_listen(remote).is_ok());
        assert!(AuthSettings::default().check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
    }
}
