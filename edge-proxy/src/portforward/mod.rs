//! `/clusters/{cluster}/api/v1/namespaces/{ns}/pods/{pod}/portforward` (`docs/PROTOCOL.md`
//! §7.4): port-forward through the proxy, with the origin, token and identity rules of exec
//! ([`Admitted`], then [`Target`]), in each of the three ways clients speak it (reference
//! `exec-portforward-protocol.md` §7–8):
//!
//! - the legacy channel protocol (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io` or no
//!   subprotocol, ports in `?ports=`): browsers, kube-rs, the Python client. The `ports` list is
//!   checked first, as the API server does; the cluster is then asked for the same subprotocol,
//!   so frames (port prefixes, error channels, base64) pass through as the cluster sent them.
//! - kubectl's `SPDY/3.1+portforward.k8s.io` WebSocket tunnel: binary messages relayed both
//!   ways to the cluster over the same subprotocol; no SPDY is parsed here.
//! - kubectl's fallback, `POST` + `Upgrade: SPDY/3.1`: the connection is upgraded on both
//!   sides and the bytes copied.
//!
//! The cluster is dialed before the client's upgrade is answered, so a refusal (no such pod, a
//! forbidden user, a bad port) reaches the client as the HTTP Status the API server would
//! send, which kubectl and kube-rs print. A request that is no upgrade goes to the cluster as
//! any pass-through request does.

pub mod metrics;
pub(crate) mod relay;
pub(crate) mod upstream;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kubemux_protocol::channel::ChannelProtocol;
use kubemux_protocol::channel::portforward::MAX_PORTS;

use crate::AppState;
use crate::auth::{Admitted, Target};
use crate::mux::TOKEN_PROTOCOL_PREFIX;
use crate::passthrough::{self, status_response};
use relay::Stops;
use upstream::{Dial, Handshake};

/// The WebSocket subprotocol of kubectl's tunnel (KEP-4006).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The header that names SPDY subprotocols.
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// How a port-forward request asks to be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A WebSocket with the legacy channel protocol.
    Channel,
    /// A WebSocket offering kubectl's SPDY tunnel.
    Tunnel,
    /// `Upgrade: SPDY/3.1`.
    Spdy,
}

impl Transport {
    /// As the API server decides: `Upgrade: SPDY/3.1` first, then a WebSocket that offers the
    /// tunnel, then any other WebSocket. `None`: no upgrade at all.
    fn of(headers: &HeaderMap) -> Option<Transport> {
        let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
            Some(Transport::Spdy)
        } else if !upgrade.eq_ignore_ascii_case("websocket") {
            None
        } else if offered_protocols(headers).any(|p| p == TUNNEL_PROTOCOL) {
            Some(Transport::Tunnel)
        } else {
            Some(Transport::Channel)
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Transport::Channel => "channel",
            Transport::Tunnel => "tunnel",
            Transport::Spdy => "spdy",
        }
    }
}

/// Every subprotocol offered, in the client's order, the token protocol left out (it is never
/// a candidate, so never echoed, nor sent upstream).
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    crate::mux::offered_protocols(headers).filter(|p| !p.is_empty() && !p.starts_with(TOKEN_PROTOCOL_PREFIX))
}

/// Why a `ports` list is refused, in the words of the kubelet's check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PortsError {
    #[error("query parameter \"ports\" is required: specify at least one port to forward")]
    Missing,
    #[error("query parameter \"ports\" cannot be empty")]
    Empty,
    #[error("unable to parse {0:?} as a port: a port must be a number between 1 and 65535")]
    Invalid(String),
    #[error("port {0:?} must be > 0")]
    Zero(String),
    #[error("too many ports: at most {MAX_PORTS} may be forwarded at once")]
    TooMany,
}

/// The ports of `?ports=80&ports=8080,9090`, checked before anything is dialed.
fn parse_ports(query: &str) -> Result<Vec<u16>, PortsError> {
    let mut ports = Vec::new();
    let mut named = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        named = true;
        if value.trim().is_empty() {
            return Err(PortsError::Empty);
        }
        for raw in value.split(',').map(str::trim) {
            match raw.parse::<u16>() {
                Ok(0) => return Err(PortsError::Zero(raw.to_owned())),
                Ok(port) => ports.push(port),
                Err(_) => return Err(PortsError::Invalid(raw.to_owned())),
            }
            // Channels are one byte: two per port.
            if ports.len() > MAX_PORTS {
                return Err(PortsError::TooMany);
            }
        }
    }
    if !named {
        return Err(PortsError::Missing);
    }
    Ok(ports)
}

/// The port-forward handler.
pub async fn handler(State(app): State<Arc<AppState>>, Admitted(identity): Admitted, target: Target, request: Request) -> Response {
    let Some(transport) = Transport::of(request.headers()) else {
        // Not an upgrade: the cluster answers it (the API server's "Upgrade request required").
        return passthrough::forward(identity, target, request).await;
    };
    let settings = app.settings();
    let query = request.uri().query().map(str::to_owned);
    let path_and_query = match &query {
        Some(query) => format!("{}?{query}", target.rest),
        None => target.rest.clone(),
    };
    let (mut parts, _body) = request.into_parts();
    // A copy: the WebSocket upgrade below takes the parts mutably.
    let client_headers = parts.headers.clone();
    let client = match target.cluster.client(&identity) {
        Ok(client) => client,
        Err(error) => {
            let status = passthrough::upstream_failure(&target.name, &error);
            return status_response(status.code, &status.reason, &status.message);
        }
    };
    let dial = Dial {
        cluster_name: &target.name,
        client,
        path_and_query: &path_and_query,
        client_headers: &client_headers,
        identity: &identity,
        timeout: settings.terminal.dial_timeout,
    };
    let stops = Stops { shutdown: app.shutdown.clone(), removed: target.cluster.removed().clone(), close_wait: settings.terminal.close_wait };
    let max_message = settings.terminal.max_message_bytes;
    let metrics = app.metrics.port_forwards.clone();

    match transport {
        Transport::Spdy => {
            let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
                return status_response(400, "BadRequest", "Upgrade request required");
            };
            let upgraded = match upstream::dial(dial, &Handshake::Spdy).await {
                Ok(upgraded) => upgraded,
                Err(refusal) => return refused(&metrics, transport, refusal),
            };
            metrics.opened(transport.as_str());
            // The 101 names what the cluster chose, as the API server's proxying does.
            let mut response = (StatusCode::SWITCHING_PROTOCOLS, [(header::CONNECTION, "Upgrade"), (header::UPGRADE, "SPDY/3.1")]).into_response();
            if let Some(chosen) = upgraded.headers.get(STREAM_PROTOCOL_HEADER) {
                response.headers_mut().insert(STREAM_PROTOCOL_HEADER, chosen.clone());
            }
            tokio::spawn(async move {
                let _open = metrics.open_guard();
                relay::bytes(on_upgrade, upgraded.io, stops).await;
            });
            response
        }
        Transport::Tunnel | Transport::Channel => {
            let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => upgrade,
                Err(rejection) => return rejection.into_response(),
            };
            let protocol = if transport == Transport::Tunnel {
                Some(TUNNEL_PROTOCOL)
            } else {
                if let Err(error) = parse_ports(query.as_deref().unwrap_or("")) {
                    return refused(&metrics, transport, status_response(400, "BadRequest", &error.to_string()));
                }
                match channel_protocol(&parts.headers) {
                    Ok(protocol) => protocol.map(ChannelProtocol::name),
                    Err(message) => return refused(&metrics, transport, status_response(400, "BadRequest", &message)),
                }
            };
            let upgraded = match upstream::dial(dial, &Handshake::WebSocket(protocol)).await {
                Ok(upgraded) => upgraded,
                Err(refusal) => return refused(&metrics, transport, refusal),
            };
            metrics.opened(transport.as_str());
            let mut upgrade = upgrade.max_message_size(max_message).max_frame_size(max_message);
            if let Some(protocol) = protocol {
                upgrade.set_selected_protocol(HeaderValue::from_static(protocol));
            }
            upgrade.on_upgrade(move |socket| async move {
                let _open = metrics.open_guard();
                relay::websockets(socket, upgraded.io, max_message, stops).await;
            })
        }
    }
}

/// Counts a refusal by its HTTP status and passes it on.
fn refused(metrics: &metrics::PortForwardMetrics, transport: Transport, response: Response) -> Response {
    metrics.refused(transport.as_str(), response.status().as_u16());
    response
}

/// The legacy protocol to speak, as the kubelet picks it: the first the client offers of
/// `v4.channel.k8s.io` and `v4.base64.channel.k8s.io`; none offered is the unnamed binary
/// protocol (`Ok(None)`); only others offered is refused (a 400 with this message).
fn channel_protocol(headers: &HeaderMap) -> Result<Option<ChannelProtocol>, String> {
    let offered: Vec<&str> = offered_protocols(headers).collect();
    if offered.is_empty() {
        return Ok(None);
    }
    match ChannelProtocol::negotiate(offered.iter().copied(), &ChannelProtocol::PORT_FORWARD) {
        Some(protocol) => Ok(Some(protocol)),
        None => {
            let supported = ChannelProtocol::PORT_FORWARD.map(ChannelProtocol::name);
            Err(format!("requested protocol(s) are not supported: {offered:?}; supported: {supported:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (axum::http::HeaderName::from_static(name), value.parse().unwrap())).collect()
    }

    #[test]
    fn ports_are_checked_like_the_kubelet_does() {
        assert_eq!(parse_ports("ports=8000"), Ok(vec![8000]));
        assert_eq!(parse_ports("ports=80%2C1234&ports=9090"), Ok(vec![80, 1234, 9090]));
        assert_eq!(parse_ports(""), Err(PortsError::Missing));
        assert_eq!(parse_ports("port=80"), Err(PortsError::Missing));
        assert_eq!(parse_ports("ports="), Err(PortsError::Empty));
        assert_eq!(parse_ports("ports=0"), Err(PortsError::Zero("0".into())));
        assert_eq!(parse_ports("ports=65536"), Err(PortsError::Invalid("65536".into())));
        assert_eq!(parse_ports("ports=-1"), Err(PortsError::Invalid("-1".into())));
        assert_eq!(parse_ports("ports=80,,81"), Err(PortsError::Invalid("".into())));
        assert_eq!(parse_ports("ports=http"), Err(PortsError::Invalid("http".into())));
        let many: Vec<String> = (1..=128).map(|p| p.to_string()).collect();
        assert_eq!(parse_ports(&format!("ports={}", many.join(","))), Err(PortsError::TooMany));
        assert_eq!(parse_ports(&format!("ports={}", many[..127].join(","))).map(|p| p.len()), Ok(127));
    }

    #[test]
    fn transports_are_told_apart_as_the_api_server_does() {
        assert_eq!(Transport::of(&headers(&[("upgrade", "SPDY/3.1")])), Some(Transport::Spdy));
        assert_eq!(Transport::of(&headers(&[("upgrade", "websocket"), ("sec-websocket-protocol", TUNNEL_PROTOCOL)])), Some(Transport::Tunnel));
        assert_eq!(Transport::of(&headers(&[("upgrade", "WebSocket"), ("sec-websocket-protocol", "v4.channel.k8s.io")])), Some(Transport::Channel));
        assert_eq!(Transport::of(&headers(&[("upgrade", "websocket")])), Some(Transport::Channel));
        assert_eq!(Transport::of(&headers(&[])), None);
    }

    #[test]
    fn channel_protocols_in_the_clients_order() {
        let kube_rs = headers(&[("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io")]);
        assert_eq!(channel_protocol(&kube_rs).ok(), Some(Some(ChannelProtocol::V4)));
        let base64 = headers(&[("sec-websocket-protocol", "base64url.bearer.authorization.k8s.io.dA, v4.base64.channel.k8s.io, v4.channel.k8s.io")]);
        assert_eq!(channel_protocol(&base64).ok(), Some(Some(ChannelProtocol::V4Base64)));
        assert_eq!(channel_protocol(&headers(&[])).ok(), Some(None), "no subprotocol is the unnamed binary protocol");
        let token_only = headers(&[("sec-websocket-protocol", "base64url.bearer.authorization.k8s.io.dA")]);
        assert_eq!(channel_protocol(&token_only).ok(), Some(None), "the token protocol is no candidate");
        let exec_only = headers(&[("sec-websocket-protocol", "v5.channel.k8s.io")]);
        assert!(channel_protocol(&exec_only).is_err_and(|message| message.contains("v5.channel.k8s.io")));
    }
}
