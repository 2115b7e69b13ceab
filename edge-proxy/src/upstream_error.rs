//! Whose fault an upstream failure is and what to do about it (`docs/PROTOCOL.md` §3.3: fatal
//! errors end the subscription, non-fatal ones are retried while the client keeps its cache).

use kubemux_protocol::frames::Status;

/// What an upstream failure means for a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// The version is gone (410): relist.
    Expired(Status),
    /// It will not heal by retrying (bad request, forbidden, no such resource): end the
    /// subscription.
    Fatal(Status),
    /// Retry with backoff (unreachable, 5xx, 429, 401 waiting for a new token).
    Retry(Status),
}

/// The upstream's own Status when it sent one, else one describing the failure.
pub fn classify(cluster: &str, error: &kube::Error) -> Classified {
    let status = match error {
        kube::Error::Api(status) => {
            let value = serde_json::to_value(status.as_ref()).unwrap_or_default();
            let mut status: Status = serde_json::from_value(value).unwrap_or_else(|_| Status::failure(status.code, "Unknown", status.message.clone()));
            status.rest.entry("kind").or_insert_with(|| "Status".into());
            status.rest.entry("apiVersion").or_insert_with(|| "v1".into());
            status.rest.entry("status").or_insert_with(|| "Failure".into());
            status
        }
        kube::Error::SerdeError(e) => Status::failure(502, "BadGateway", format!("cluster {cluster} sent an unreadable response: {e}")),
        other if let Some(fault) = proxy_fault(other) => Status::failure(500, "InternalError", format!("proxy misconfiguration for cluster {cluster}: {fault}: {}", error_chain(other))),
        other => Status::failure(503, "ServiceUnavailable", format!("cluster {cluster} unreachable: {}", error_chain(other))),
    };
    if too_large_version(&status) {
        // The server is behind the version the proxy holds: its history is not the one the
        // version came from (a cluster whose server a reload changed, an etcd restored from a
        // backup). Waiting will not make it catch up; relisting does, as a 410 would.
        return Classified::Expired(status);
    }
    match status.code {
        410 => Classified::Expired(status),
        400 | 403 | 404 | 405 | 406 | 415 | 422 => Classified::Fatal(status),
        _ => Classified::Retry(status),
    }
}

/// Whether the API server refused a version as newer than its own (`ResourceVersionTooLarge`,
/// answered as a 504 with that cause).
pub(crate) fn too_large_version(status: &Status) -> bool {
    let causes = status.rest.get("details").and_then(|d| d.get("causes")).and_then(|c| c.as_array());
    causes.is_some_and(|causes| causes.iter().any(|c| c.get("reason").and_then(|r| r.as_str()) == Some("ResourceVersionTooLarge")))
}

/// Whether a failure is the proxy's own configuration at fault rather than the cluster: its
/// credentials cannot be used (an unreadable or malformed token, a failing exec plugin), or the
/// server's certificate does not verify with the CA the proxy was given. Such an error is
/// reported as the proxy's (a 500 that says what to fix), not as the cluster being unreachable;
/// it is still retried, since fixing the file reloads the cluster and heals it.
fn proxy_fault(error: &kube::Error) -> Option<&'static str> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<kube::client::AuthError>().is_some() {
            return Some("its credentials cannot be used (fix the kubeconfig or token file; the proxy reloads when it changes)");
        }
        // rustls' verification errors reach here boxed inside hyper's connect error, as text
        // only: "invalid peer certificate: UnknownIssuer" and the like.
        if current.to_string().contains("invalid peer certificate") {
            return Some("the server's TLS certificate does not verify with the configured CA (fix certificateAuthority or the kubeconfig's CA)");
        }
        cause = current.source();
    }
    None
}

/// An error with its causes, for messages that say why ("connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_credentials_are_the_proxys_fault_and_retried() {
        let invalid = http::HeaderValue::from_str("line\nbreak").unwrap_err();
        let error = kube::Error::Auth(kube::client::AuthError::InvalidBearerToken(invalid));
        let Classified::Retry(status) = classify("prod", &error) else { panic!("retried: a fixed file reloads the cluster") };
        assert_eq!(status.code, 500);
        assert!(status.message.starts_with("proxy misconfiguration for cluster prod: its credentials cannot be used"), "{}", status.message);
    }

    #[test]
    fn a_version_newer_than_the_server_relists() {
        let status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 504, "reason": "Timeout",
            "message": "Timeout: Too large resource version: 20, current: 10",
            "details": {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}
        }))
        .unwrap();
        assert!(matches!(classify("prod", &kube::Error::Api(Box::new(status))), Classified::Expired(_)));
    }

    #[test]
    fn a_connection_failure_is_the_clusters() {
        let error = kube::Error::Service("connection refused".into());
        let Classified::Retry(status) = classify("prod", &error) else { panic!() };
        assert_eq!((status.code, status.reason.as_str()), (503, "ServiceUnavailable"));
        assert!(status.message.contains("cluster prod unreachable"), "{}", status.message);
    }
}
