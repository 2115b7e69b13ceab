//! Whose credentials an upstream request uses. An identity is part of every watch key, so two
//! identities never share an upstream watch or a cache (DESIGN.md invariant 7).

use std::fmt;
use std::sync::Arc;

/// The credentials behind an upstream request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The proxy's own credentials for the cluster (from its kubeconfig or service account).
    Proxy,
    /// A bearer token supplied by the client.
    Token(Arc<str>),
}

impl Identity {
    /// A token identity.
    pub fn token(token: &str) -> Identity {
        Identity::Token(Arc::from(token))
    }
}

/// Never prints a token: identities appear in logs and panics only as their kind.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Proxy => f.write_str("Identity::Proxy"),
            Identity::Token(_) => f.write_str("Identity::Token(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_token() {
        let id = Identity::token("super-secret-token");
        assert!(!format!("{id:?}").contains("super-secret"));
        assert_ne!(id, Identity::token("other"));
        assert_eq!(id, Identity::token("super-secret-token"));
    }
}
