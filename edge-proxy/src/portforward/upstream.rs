//! Dialing the cluster for a port-forward: an HTTP/1.1 upgrade sent through the cluster's
//! `kube::Client`, so its URL (path prefix included), TLS and credentials apply, with the
//! handshake itself built here.
//!
//! Why not `kube::Client::connect`: it always offers `v5.channel.k8s.io, v4.channel.k8s.io` and
//! accepts nothing else, so it can carry neither `v4.base64.channel.k8s.io` nor kubectl's
//! `SPDY/3.1+portforward.k8s.io` tunnel, and kube has no raw upgrade for `Upgrade: SPDY/3.1`.
//! `Client::send` keeps hyper's pending upgrade on the response (that is how `connect` itself
//! works), so one function serves all three.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::identity::Identity;
use crate::passthrough::{copy_request_headers, status_response, upstream_failure};

/// The connection upstream once the cluster answered 101.
pub(crate) type UpstreamIo = TokioIo<hyper::upgrade::Upgraded>;

/// What is asked of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// A WebSocket offering exactly this subprotocol (`None`: no subprotocol header at all).
    WebSocket(Option<&'static str>),
    /// `Upgrade: SPDY/3.1`; the client's `X-Stream-Protocol-Version` values go along.
    Spdy,
}

/// A cluster that upgraded: the connection and the 101's headers.
pub(crate) struct Upgraded {
    pub io: UpstreamIo,
    pub headers: HeaderMap,
}

/// Everything needed to dial.
pub(crate) struct Dial<'a> {
    pub cluster_name: &'a str,
    pub client: kube::Client,
    /// The API path and query, as the client sent them.
    pub path_and_query: &'a str,
    /// The client's request headers: end-to-end ones go upstream, as in pass-through.
    pub client_headers: &'a HeaderMap,
    pub identity: &'a Identity,
    pub timeout: Duration,
}

/// Sends the upgrade request. `Err` is the answer for the client: the cluster's own refusal
/// (status and body as sent, so a 404 for a missing pod or a 403 reaches kubectl as is), or a
/// Status for a cluster that failed or answered something that is no upgrade.
pub(crate) async fn dial(dial: Dial<'_>, handshake: &Handshake) -> Result<Upgraded, Response> {
    let mut request = http::Request::get(dial.path_and_query);
    if *handshake == Handshake::Spdy {
        // kubectl's fallback is a POST, as is the API server's own request to the kubelet.
        request = request.method(http::Method::POST);
    }
    let mut request = request
        .body(kube::client::Body::empty())
        .map_err(|e| status_response(400, "BadRequest", &format!("invalid request: {e}")))?;
    let headers = request.headers_mut();
    // Drops hop-by-hop headers, `Sec-WebSocket-*`, credentials and (for the proxy's own
    // identity) `Impersonate-*`: the same rules as every pass-through request.
    copy_request_headers(dial.client_headers, headers, dial.identity);
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let key = tungstenite::handshake::client::generate_key();
    match handshake {
        Handshake::WebSocket(protocol) => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            let key = HeaderValue::from_str(&key).map_err(|e| status_response(500, "InternalError", &e.to_string()))?;
            headers.insert(header::SEC_WEBSOCKET_KEY, key);
            if let Some(protocol) = protocol {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            }
        }
        Handshake::Spdy => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        }
    }
    let response = match tokio::time::timeout(dial.timeout, dial.client.send(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            let status = upstream_failure(dial.cluster_name, &error);
            return Err(status_response(status.code, &status.reason, &status.message));
        }
        Err(_) => return Err(status_response(504, "Timeout", &format!("cluster {} did not answer the port-forward request in time", dial.cluster_name))),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The cluster's refusal as it sent it (a Status, usually), streamed back.
        let (parts, body) = response.into_parts();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = parts.status;
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            out.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
        }
        return Err(out);
    }
    if let Handshake::WebSocket(protocol) = handshake {
        let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes);
        if accept != Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_bytes()) {
            return Err(bad_upgrade(dial.cluster_name, "a WebSocket answer with the wrong Sec-WebSocket-Accept"));
        }
        let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
        if chosen != *protocol {
            return Err(bad_upgrade(dial.cluster_name, &format!("subprotocol {chosen:?} where {protocol:?} was asked for")));
        }
    }
    let headers = response.headers().clone();
    match tokio::time::timeout(dial.timeout, hyper::upgrade::on(response)).await {
        Ok(Ok(upgraded)) => Ok(Upgraded { io: TokioIo::new(upgraded), headers }),
        Ok(Err(error)) => Err(bad_upgrade(dial.cluster_name, &format!("an upgrade that did not complete ({error})"))),
        Err(_) => Err(bad_upgrade(dial.cluster_name, "an upgrade that did not complete in time")),
    }
}

fn bad_upgrade(cluster: &str, what: &str) -> Response {
    status_response(502, "BadGateway", &format!("cluster {cluster} answered the port-forward request with {what}"))
}
