//! `/forwards/{name}/{rest…}`: a forward's target opened in the browser, with no local port.
//! Any HTTP request (its body streamed both ways) and WebSocket upgrades go to the forward's
//! target as `{rest…}`, over a tunnel to a Ready pod that the forward's worker opens exactly as
//! for a new local connection (the same pick, the same tunnel, counted in its connections and
//! bytes).
//!
//! Admission is [`crate::auth::admit`]'s, as for every route (`Origin` checked, in token mode
//! a bearer token required). The forward acts with the proxy's credentials for its cluster, so
//! a request that carries a token must also pass a SelfSubjectAccessReview, as that token, of
//! `create` on `pods/portforward` in the forward's namespace: no one reaches a pod through the
//! proxy who could not port-forward to it themselves.
//!
//! What goes to the pod: the method, `{rest…}` and the query, the end-to-end headers, minus
//! what is the proxy's business (hop-by-hop headers, `Authorization`, `Cookie`, `Origin`, the
//! client's `X-Forwarded-*`); `Host` names the target ([`ForwardSpec::host`]); and
//! `X-Forwarded-Host`, `-Proto` and `-Prefix` (`/forwards/{name}`) say where the request came
//! from. HTTP is spoken by hyper on both sides; an upgrade's bytes are relayed as they are.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::Forwards;
use super::spec::ForwardSpec;
use super::tunnel::Ended;
use super::worker::{self, Open, Stream};
use crate::AppState;
use crate::auth::Admitted;
use crate::identity::Identity;
use crate::passthrough::{DROPPED_RESPONSE_HEADERS, connection_tokens, percent_decode, status_response};
use crate::portforward::relay::{self, Stops};

/// The path prefix of this route.
pub const PREFIX: &str = "/forwards/";

/// Request headers never sent to the pod: hop-by-hop, the proxy's credentials and the
/// browser's state for the proxy, and forwarding headers the proxy sets itself.
const DROPPED: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "origin",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
];

/// Why a stream to a forward's target could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No forward of that name.
    NotFound,
    /// The forward cannot reach its target now: why (its state and reason included).
    Unavailable(String),
}

impl Forwards {
    /// The configuration of a running forward.
    pub fn spec(&self, name: &str) -> Option<Arc<ForwardSpec>> {
        self.lock().get(name).map(|r| r.spec.clone())
    }

    /// A stream to the forward's target: its worker picks a pod and opens a tunnel as for a
    /// new local connection, but answers at once when no pod is Ready.
    pub async fn open(&self, name: &str) -> Result<Stream, OpenError> {
        let Some((opens, spec)) = self.lock().get(name).map(|r| (r.opens.clone(), r.spec.clone())) else { return Err(OpenError::NotFound) };
        let (reply, answer) = oneshot::channel();
        let unavailable = |why: String| {
            let status = self.status(name).map(|s| s.borrow().clone());
            let state = status.map(|s| match s.reason {
                Some(reason) => format!("{} ({})", s.state.as_str(), reason.as_str()),
                None => s.state.as_str().to_owned(),
            });
            OpenError::Unavailable(format!("forward \"{name}\" cannot reach {}: {why}{}", spec.target, state.map(|s| format!("; the forward is {s}")).unwrap_or_default()))
        };
        if opens.send(Open { reply }).await.is_err() {
            return Err(unavailable("it is stopping".to_owned()));
        }
        // The worker's dial is bounded by the forward's connectTimeout; a little more here, in
        // case the worker is being restarted by the watchdog.
        match tokio::time::timeout(spec.connect_timeout + Duration::from_secs(5), answer).await {
            Ok(Ok(Ok(stream))) => Ok(stream),
            Ok(Ok(Err(why))) => Err(unavailable(why)),
            Ok(Err(_)) => Err(unavailable("it stopped".to_owned())),
            Err(_) => Err(unavailable("no tunnel within its connectTimeout".to_owned())),
        }
    }
}

/// `(name, rest)` of `/forwards/{name}/{rest…}`: the name percent-decoded, the rest (with its
/// leading `/`, `/` when absent) as sent.
fn split_path(path: &str) -> Option<(String, String)> {
    let after = path.strip_prefix(PREFIX)?;
    let (name, rest) = after.split_once('/').map_or((after, "/".to_owned()), |(name, rest)| (name, format!("/{rest}")));
    (!name.is_empty()).then(|| (percent_decode(name), rest))
}

/// The `/forwards/{name}/…` handler.
pub async fn handler(State(app): State<Arc<AppState>>, Admitted(identity): Admitted, request: Request) -> Response {
    let Some((name, rest)) = split_path(request.uri().path()) else {
        return status_response(404, "NotFound", "the path must be /forwards/{name}/{path}");
    };
    let Some(spec) = app.forwards.spec(&name) else {
        return status_response(404, "NotFound", &format!("forward \"{name}\" not found"));
    };
    if let Err(refusal) = check_access(&app, &identity, &spec).await {
        return refusal;
    }
    let stream = match app.forwards.open(&name).await {
        Ok(stream) => stream,
        Err(OpenError::NotFound) => return status_response(404, "NotFound", &format!("forward \"{name}\" not found")),
        Err(OpenError::Unavailable(why)) => return status_response(503, "ServiceUnavailable", &why),
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest,
    };
    let stops =
        Stops { shutdown: app.shutdown.clone(), removed: app.snapshot().clusters.get(&spec.cluster).map(|c| c.removed().clone()).unwrap_or_default(), close_wait: app.settings().terminal.close_wait };
    proxy(request, &name, &spec, &path_and_query, stream, stops).await
}

/// A request carrying a token may reach the pod only if that token may port-forward there.
async fn check_access(app: &AppState, identity: &Identity, spec: &ForwardSpec) -> Result<(), Response> {
    if *identity == Identity::Proxy {
        return Ok(());
    }
    let cluster = app.snapshot().clusters.get(&spec.cluster).ok_or_else(|| status_response(503, "ServiceUnavailable", &format!("cluster \"{}\" is not configured", spec.cluster)))?;
    let client = cluster.client(identity).map_err(|e| status_response(503, "ServiceUnavailable", &format!("no client for cluster \"{}\": {e}", spec.cluster)))?;
    match super::access::review(&client, &spec.cluster, &spec.namespace, &[super::access::PORT_FORWARD], spec.preflight_timeout).await {
        super::access::Verdict::Allowed => Ok(()),
        super::access::Verdict::Denied(why) => Err(status_response(403, "Forbidden", &format!("forward \"{}\": this token is refused: {why}", spec.name))),
        super::access::Verdict::Unanswered(why) => Err(status_response(503, "ServiceUnavailable", &format!("forward \"{}\": could not check this token's permissions: {why}", spec.name))),
    }
}

/// Whether the request asks to switch protocols (a WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).iter().any(|t| t == "upgrade")
}

/// The headers the pod gets.
fn upstream_headers(from: &HeaderMap, spec: &ForwardSpec, name: &str, upgrade: bool) -> HeaderMap {
    let listed = connection_tokens(from);
    let mut to = HeaderMap::new();
    for (header_name, value) in from {
        let lower = header_name.as_str();
        if !DROPPED.contains(&lower) && !listed.iter().any(|l| l == lower) {
            to.append(HeaderName::clone(header_name), value.clone());
        }
    }
    if upgrade && let Some(protocol) = from.get(header::UPGRADE) {
        to.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        to.insert(header::UPGRADE, protocol.clone());
    }
    if let Ok(host) = HeaderValue::from_str(&spec.host()) {
        to.insert(header::HOST, host);
    }
    if let Some(host) = from.get(header::HOST) {
        to.insert("x-forwarded-host", host.clone());
    }
    to.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Ok(prefix) = HeaderValue::from_str(&format!("{PREFIX}{name}")) {
        to.insert("x-forwarded-prefix", prefix);
    }
    to
}

/// Sends the request over `stream` and answers with the pod's response; an accepted upgrade's
/// bytes are relayed until either side ends, the proxy stops, or the cluster is removed.
async fn proxy(request: Request, name: &str, spec: &ForwardSpec, path_and_query: &str, stream: Stream, stops: Stops) -> Response {
    let Stream { io, ended } = stream;
    let (mut parts, body) = request.into_parts();
    let upgrade = is_upgrade(&parts.headers);
    let client_upgrade = if upgrade { parts.extensions.remove::<hyper::upgrade::OnUpgrade>() } else { None };
    let mut upstream = http::Request::builder().method(parts.method.clone()).uri(path_and_query);
    if let Some(headers) = upstream.headers_mut() {
        *headers = upstream_headers(&parts.headers, spec, name, upgrade);
    }
    let upstream = match upstream.body(if upgrade { Body::empty() } else { body }) {
        Ok(request) => request,
        Err(error) => return status_response(400, "BadRequest", &format!("invalid request: {error}")),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(handshake) => handshake,
        Err(error) => return bad_gateway(name, &error.to_string(), ended).await,
    };
    // Runs until the exchange is done (and, after an upgrade, hands the connection over).
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "a /forwards connection to the pod ended with an error");
        }
    });
    let mut response = match sender.send_request(upstream).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(name, &error.to_string(), ended).await,
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client_upgrade) = client_upgrade {
        let pod_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match pod_upgrade.await {
                Ok(upgraded) => relay::bytes(client_upgrade, TokioIo::new(upgraded), stops).await,
                Err(error) => tracing::debug!(%error, "the pod's upgrade did not complete"),
            }
        });
    }
    let (response_parts, response_body) = response.into_parts();
    let mut out = Response::new(if switching { Body::empty() } else { Body::new(response_body) });
    *out.status_mut() = response_parts.status;
    for (header_name, value) in &response_parts.headers {
        let hop_by_hop = DROPPED_RESPONSE_HEADERS.contains(&header_name.as_str());
        // A 101 keeps the headers that say what the connection switched to.
        if !hop_by_hop || (switching && (header_name == header::CONNECTION || header_name == header::UPGRADE)) {
            out.headers_mut().append(header_name.clone(), value.clone());
        }
    }
    out
}

/// 502: the tunnel opened, but the app did not answer; the tunnel's reason (the app refused)
/// when it gives one.
async fn bad_gateway(name: &str, error: &str, ended: oneshot::Receiver<Ended>) -> Response {
    let why = worker::refusal_or(ended, error.to_owned()).await;
    status_response(502, "BadGateway", &format!("forward \"{name}\": the target did not answer: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::spec::{PortRef, Target};

    #[test]
    fn paths_split_into_forward_and_rest() {
        assert_eq!(split_path("/forwards/web/a/b"), Some(("web".into(), "/a/b".into())));
        assert_eq!(split_path("/forwards/web"), Some(("web".into(), "/".into())));
        assert_eq!(split_path("/forwards/web/"), Some(("web".into(), "/".into())));
        assert_eq!(split_path("/forwards/w%65b/x%2Fy"), Some(("web".into(), "/x%2Fy".into())), "the rest stays encoded");
        assert_eq!(split_path("/forwards/"), None);
    }

    #[test]
    fn the_pod_gets_end_to_end_headers_and_where_the_request_came_from() {
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("host", "127.0.0.1:8080"),
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            ("origin", "http://127.0.0.1:8080"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("accept", "text/html"),
            ("content-length", "3"),
        ] {
            from.append(k, v.parse().unwrap());
        }
        let spec = ForwardSpec::new("web", "demo", "demo", Target::Service("web".into()), PortRef::Number(80), 0);
        let to = upstream_headers(&from, &spec, "web", false);
        let names: Vec<&str> = to.keys().map(HeaderName::as_str).collect();
        for gone in ["authorization", "cookie", "origin", "connection", "x-hop", "x-forwarded-for", "upgrade"] {
            assert!(!names.contains(&gone), "{gone} reached the pod: {names:?}");
        }
        assert_eq!(to["host"], "web.demo.svc");
        assert_eq!((to["accept"].to_str().unwrap(), to["content-length"].to_str().unwrap()), ("text/html", "3"));
        assert_eq!((to["x-forwarded-host"].to_str().unwrap(), to["x-forwarded-prefix"].to_str().unwrap()), ("127.0.0.1:8080", "/forwards/web"));

        from.insert("connection", "Upgrade".parse().unwrap());
        from.insert("upgrade", "websocket".parse().unwrap());
        from.insert("sec-websocket-key", "abc".parse().unwrap());
        assert!(is_upgrade(&from));
        let pod = ForwardSpec::new("db", "demo", "demo", Target::Pod("db-0".into()), PortRef::Number(8080), 0);
        let to = upstream_headers(&from, &pod, "db", true);
        assert_eq!((to["connection"].to_str().unwrap(), to["upgrade"].to_str().unwrap(), to["sec-websocket-key"].to_str().unwrap()), ("upgrade", "websocket", "abc"));
        assert_eq!(to["host"], "localhost:8080");
    }
}
