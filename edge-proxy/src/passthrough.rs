//! `/clusters/{cluster}/{api path}`: every Kubernetes API request that is not a terminal goes
//! to the cluster as sent (method, path, query, body, content type and other end-to-end
//! headers) and the cluster's answer comes back as is: status, headers, body, with watches
//! streamed as they arrive. So `kubectl --server http://PROXY/clusters/NAME` works.
//!
//! Identity is the connection's, as everywhere in the proxy: the client's bearer token
//! (`Authorization` or the token subprotocol), else (in proxy auth mode) the proxy's own
//! credentials; [`crate::auth::admit`] decides. The client's
//! `Authorization` never goes upstream as such (the cluster's client sets it), and
//! `Impersonate-*` headers only go upstream with the client's own token: with the proxy's
//! credentials they would let anyone act as whoever the proxy may impersonate.


use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kubemux_protocol::frames::Status;

use crate::auth::{Admitted, Target};
use crate::identity::Identity;
use crate::registry::{MAX_URI_BYTES, joined_length};
use crate::upstream_error::{Classified, classify};

/// The largest request body passed through. Request bodies are read whole before they go
/// upstream (the cluster client takes a complete body); the API server's own limit is 3 MiB.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Request headers that are the proxy's business, never the upstream's: hop-by-hop headers,
/// credentials (the upstream client sets its own) and browser state.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "origin",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Hop-by-hop response headers: they describe the upstream connection, not the answer.
pub(crate) const DROPPED_RESPONSE_HEADERS: &[&str] = &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// The pass-through handler.
pub async fn handler(Admitted(identity): Admitted, target: Target, request: Request) -> Response {
    forward(identity, target, request).await
}

/// Sends `request` to its cluster, acting as `identity`, and returns its answer.
pub(crate) async fn forward(identity: Identity, target: Target, request: Request) -> Response {
    let Target { name: cluster_name, cluster, rest } = target;
    let client = match cluster.client(&identity) {
        Ok(client) => client,
        Err(error) => return status_into_response(&upstream_failure(&cluster_name, &error)),
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest,
    };
    // The request came in as a valid URI, but the cluster URL's own path goes in front of it
    // upstream (a cluster behind Rancher's `/k8s/clusters/ID`, say), which can push it past
    // what a URI may hold.
    let length = joined_length(&cluster.url(), &path_and_query);
    if length > MAX_URI_BYTES {
        let message = format!("the request to cluster \"{cluster_name}\" would be {length} bytes long with the cluster URL's path, over the limit of {MAX_URI_BYTES} bytes");
        return status_response(414, "RequestURITooLong", &message);
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(body) => body,
        Err(_) => return status_response(413, "RequestEntityTooLarge", &format!("request bodies are limited to {MAX_REQUEST_BODY} bytes")),
    };
    let mut upstream = http::Request::builder().method(parts.method.clone()).uri(path_and_query.as_str());
    if let Some(headers) = upstream.headers_mut() {
        copy_request_headers(&parts.headers, headers, &identity);
    }
    let upstream = match upstream.body(kube::client::Body::from(body)) {
        Ok(request) => request,
        Err(error) => return status_response(400, "BadRequest", &format!("invalid request: {error}")),
    };
    let response = match client.send(upstream).await {
        Ok(response) => response,
        Err(error) => {
            let status = upstream_failure(&cluster_name, &error);
            tracing::debug!(cluster = %cluster_name, method = %parts.method, code = status.code, "pass-through request failed");
            return status_into_response(&status);
        }
    };
    let (upstream_parts, upstream_body) = response.into_parts();
    let mut out = Response::new(Body::new(upstream_body));
    *out.status_mut() = upstream_parts.status;
    for (name, value) in &upstream_parts.headers {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// Copies the end-to-end request headers a cluster may see (the port-forward upgrade uses the
/// same rules).
pub(crate) fn copy_request_headers(from: &HeaderMap, to: &mut HeaderMap, identity: &Identity) {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let listed = connection_tokens(from);
    for (name, value) in from {
        let name_str = name.as_str();
        let dropped = DROPPED_REQUEST_HEADERS.contains(&name_str)
            || name_str.starts_with("sec-websocket-")
            || listed.iter().any(|l| l == name_str)
            || (name_str.starts_with("impersonate-") && *identity == Identity::Proxy);
        if !dropped {
            to.append(HeaderName::clone(name), value.clone());
        }
    }
}

/// The tokens of the `Connection` headers, lowercased: the headers they name are hop-by-hop
/// (RFC 9110 §7.6.1), and `upgrade` asks to switch protocols.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|name| name.trim().to_ascii_lowercase()).collect()
}

/// `(cluster, rest)` of `/clusters/{cluster}/{rest…}`: the cluster name percent-decoded, the
/// rest (with its leading `/`) exactly as sent, so that its encoding reaches the upstream intact.
pub(crate) fn split_cluster_path(path: &str) -> Option<(String, String)> {
    let after = path.strip_prefix("/clusters/")?;
    let (cluster, rest) = after.split_once('/')?;
    if cluster.is_empty() || rest.is_empty() {
        return None;
    }
    Some((percent_decode(cluster), format!("/{rest}")))
}

/// Decodes `%XX` escapes of one path segment (`+` stays a plus: this is a path, not a form).
pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Status describing an upstream failure: the cluster's own when it sent one.
pub(crate) fn upstream_failure(cluster: &str, error: &kube::Error) -> Status {
    match classify(cluster, error) {
        Classified::Expired(status) | Classified::Fatal(status) | Classified::Retry(status) => status,
    }
}

/// A `Failure` Status response, as the API server writes them.
pub(crate) fn status_response(code: u16, reason: &str, message: &str) -> Response {
    status_into_response(&Status::failure(code, reason, message))
}

fn status_into_response(status: &Status) -> Response {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = serde_json::to_vec(status).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_paths() {
        assert_eq!(split_cluster_path("/clusters/prod/api/v1/pods"), Some(("prod".into(), "/api/v1/pods".into())));
        assert_eq!(split_cluster_path("/clusters/a%20b/api"), Some(("a b".into(), "/api".into())));
        assert_eq!(
            split_cluster_path("/clusters/c/api/v1/namespaces/x/configmaps/a%2Fb"),
            Some(("c".into(), "/api/v1/namespaces/x/configmaps/a%2Fb".into())),
            "the rest keeps its encoding"
        );
        assert_eq!(split_cluster_path("/clusters/c/"), None);
        assert_eq!(split_cluster_path("/clusters//api"), None);
        assert_eq!(split_cluster_path("/mux"), None);
        assert_eq!(percent_decode("a+b%2f%zz"), "a+b/%zz");
    }

    #[test]
    fn request_headers_sent_upstream() {
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("content-type", "application/apply-patch+yaml"),
            ("accept", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("cookie", "session=1"),
            ("impersonate-user", "admin"),
            ("kubectl-command", "kubectl apply"),
            ("host", "127.0.0.1:8080"),
        ] {
            from.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        let names = |identity: &Identity| {
            let mut to = HeaderMap::new();
            copy_request_headers(&from, &mut to, identity);
            let mut names: Vec<String> = to.keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&Identity::Proxy), ["accept", "content-type", "kubectl-command"]);
        assert_eq!(names(&Identity::token("t")), ["accept", "content-type", "impersonate-user", "kubectl-command"]);
    }
}
