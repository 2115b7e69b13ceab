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
        other => Status::failure(503, "ServiceUnavailable", format!("cluster {cluster} unreachable: {}", error_chain(other))),
    };
    match status.code {
        410 => Classified::Expired(status),
        400 | 403 | 404 | 405 | 406 | 415 | 422 => Classified::Fatal(status),
        _ => Classified::Retry(status),
    }
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
