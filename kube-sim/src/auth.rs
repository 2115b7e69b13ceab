//! Who is asking, and may they? Bearer tokens from `--user NAME:TOKEN:NAMESPACES`, read from the
//! `Authorization` header or, for browsers, from the
//! `base64url.bearer.authorization.k8s.io.<token>` WebSocket subprotocol. Authorization is by
//! namespace only: a user sees the namespaces on its list, or everything with `*`.

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::resources::ResourceDef;
use crate::status::ApiError;

/// The WebSocket subprotocol prefix that carries a bearer token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name, as it appears in 403 messages.
    pub name: String,
    /// Bearer token.
    pub token: String,
    /// Namespaces the user may use; `None` means every namespace and cluster-scoped resources.
    pub namespaces: Option<Vec<String>>,
}

impl User {
    /// Parses `NAME:TOKEN:NS1,NS2` (or `NAME:TOKEN:*`).
    pub fn parse(spec: &str) -> Result<User, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(token), Some(namespaces)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("--user {spec:?}: expected NAME:TOKEN:NAMESPACES (NAMESPACES is a comma list or *)"));
        };
        if name.is_empty() || token.is_empty() || namespaces.is_empty() {
            return Err(format!("--user {spec:?}: name, token and namespaces must not be empty"));
        }
        let namespaces = if namespaces == "*" {
            None
        } else {
            Some(namespaces.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect())
        };
        Ok(User { name: name.to_owned(), token: token.to_owned(), namespaces })
    }

    /// Whether the user may use everything.
    pub fn is_admin(&self) -> bool {
        self.namespaces.is_none()
    }
}

/// The identity a request was authenticated as.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No users are configured: anonymous requests have full access.
    Anonymous,
    /// A configured user.
    User(Arc<User>),
}

impl Identity {
    /// The name used in messages.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "system:anonymous",
            Identity::User(u) => &u.name,
        }
    }

    /// Whether this identity may use `namespace` (`None`: cluster scope or all namespaces).
    pub fn may_use(&self, namespace: Option<&str>) -> bool {
        match (self, namespace) {
            (Identity::Anonymous, _) => true,
            (Identity::User(u), _) if u.is_admin() => true,
            (Identity::User(u), Some(ns)) => u.namespaces.iter().flatten().any(|n| n == ns),
            (Identity::User(_), None) => false,
        }
    }

    /// Checks `verb` on `resource` in `namespace`, with the real server's 403.
    pub fn authorize(&self, verb: &str, resource: &ResourceDef, namespace: Option<&str>) -> Result<(), ApiError> {
        if self.may_use(namespace) {
            Ok(())
        } else {
            Err(ApiError::forbidden(self.name(), verb, resource.plural, resource.group, namespace))
        }
    }
}

/// Non-resource paths every authenticated user may `get` (the API server's
/// `system:discovery` and `system:public-info-viewer` roles).
const PUBLIC_PATHS: &[&str] = &["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"];

impl Identity {
    /// Whether this identity may act on resources in `namespace` (`None`: cluster scope or
    /// every namespace), whatever the verb: the namespace rule every request is held to.
    pub fn allows_resource(&self, namespace: Option<&str>) -> bool {
        self.may_use(namespace)
    }

    /// Whether this identity may `verb` the non-resource `path`: an admin anything, everyone
    /// else a `get` of discovery and health paths.
    pub fn allows_path(&self, verb: &str, path: &str) -> bool {
        if self.may_use(None) {
            return true;
        }
        verb == "get" && PUBLIC_PATHS.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == *p,
        })
    }

    /// What this identity may do in `namespace`, as `SelfSubjectRulesReview` rules: everything
    /// where it may use the namespace; elsewhere only what every user may (ask these questions,
    /// read discovery).
    pub fn rules(&self, namespace: &str) -> (Vec<Rule>, Vec<Rule>) {
        let ask = Rule { verbs: vec!["create"], groups: vec!["authorization.k8s.io"], resources: vec!["selfsubjectaccessreviews", "selfsubjectrulesreviews"] };
        let everything = Rule { verbs: vec!["*"], groups: vec!["*"], resources: vec!["*"] };
        let paths = if self.may_use(None) {
            vec![Rule { verbs: vec!["*"], groups: Vec::new(), resources: vec!["*"] }]
        } else {
            vec![Rule { verbs: vec!["get"], groups: Vec::new(), resources: PUBLIC_PATHS.to_vec() }]
        };
        let resources = if self.may_use(Some(namespace).filter(|n| !n.is_empty())) { vec![ask, everything] } else { vec![ask] };
        (resources, paths)
    }
}

/// One rule of a rules review: verbs on resources of API groups (`groups` is empty for
/// non-resource rules, whose `resources` are URL paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Verbs, or `*`.
    pub verbs: Vec<&'static str>,
    /// API groups, or `*`.
    pub groups: Vec<&'static str>,
    /// Resources (or paths), or `*`.
    pub resources: Vec<&'static str>,
}

/// The token a request carries, from `Authorization: Bearer` or the WebSocket subprotocol.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX).map(str::to_owned))
        .and_then(|encoded| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Authenticates a request against the configured users.
pub fn authenticate(users: &[Arc<User>], headers: &HeaderMap) -> Result<Identity, ApiError> {
    if users.is_empty() {
        return Ok(Identity::Anonymous);
    }
    let token = request_token(headers).ok_or_else(ApiError::unauthorized)?;
    users
        .iter()
        .find(|u| u.token == token)
        .map(|u| Identity::User(u.clone()))
        .ok_or_else(ApiError::unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_specs() {
        let u = User::parse("alice:s3cret:demo,default").unwrap();
        assert_eq!(u.namespaces, Some(vec!["demo".to_owned(), "default".to_owned()]));
        assert!(User::parse("root:t:*").unwrap().is_admin());
        assert!(User::parse("bob:t").is_err());
        assert!(User::parse("bob::demo").is_err());
    }

    #[test]
    fn token_from_header_or_subprotocol() {
        let users = vec![Arc::new(User::parse("alice:tok-1:demo").unwrap())];
        let mut headers = HeaderMap::new();
        assert_eq!(authenticate(&users, &headers).unwrap_err().code, 401);
        headers.insert("sec-websocket-protocol", "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rLTE".parse().unwrap());
        let id = authenticate(&users, &headers).unwrap();
        assert!(id.may_use(Some("demo")) && !id.may_use(Some("default")) && !id.may_use(None));
        headers.insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(authenticate(&users, &headers).unwrap_err().code, 401);
    }
}
