//! Plain HTTP/1.1 for endpoints that are not Kubernetes APIs (`/metrics`, `/clusters`,
//! `/healthz`, a refused Origin): hyper's own client (hyper-util's legacy client, which kube
//! already builds on), so chunked bodies and keep-alive are hyper's business, not the tests'.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, Request};
pub use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::wait::within;

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text (lossily).
    pub body: String,
}

impl Response {
    /// The response as it reads on the wire, without transfer encoding: status line, headers,
    /// blank line, body. What `kubemux_e2e::http_get` has always returned.
    pub fn as_wire_text(&self) -> String {
        let mut text = format!("HTTP/1.1 {} {}\r\n", self.status.as_u16(), self.status.canonical_reason().unwrap_or(""));
        for (name, value) in &self.headers {
            let _ = write!(text, "{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes()));
        }
        text.push_str("\r\n");
        text.push_str(&self.body);
        text
    }
}

/// `GET url`, read to the end; fails the test when the server does not answer within
/// [`crate::wait::DEADLINE`].
pub async fn get(url: &str) -> Response {
    request(Method::GET, url, &[]).await
}

/// `GET url`, read to the end, or what went wrong (no listener yet, a broken body, no answer
/// within [`crate::wait::DEADLINE`]): for a server that may not be up.
pub async fn try_get(url: &str) -> Result<Response, String> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder().uri(url).body(Full::new(Bytes::new())).map_err(|e| format!("GET {url}: not a valid request: {e}"))?;
    let answer = async {
        let response = client.request(request).await.map_err(|e| format!("GET {url}: {e}"))?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| format!("GET {url}: the body broke: {e}"))?.to_bytes();
        Ok(Response { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() })
    };
    tokio::time::timeout(crate::wait::DEADLINE, answer).await.unwrap_or_else(|_| Err(format!("GET {url}: no answer within {:?}", crate::wait::DEADLINE)))
}

/// `method url` with `headers` and no body, read to the end.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Response {
    send(method, url, headers, Bytes::new()).await
}

/// `method url` with `headers` and `body` (sent with its length when not empty), read to the
/// end.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).unwrap_or_else(|e| panic!("{method} {url}: not a valid request: {e}"));
    within(&format!("an answer to {method} {url}"), async {
        let response = client.request(request).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap_or_else(|e| panic!("{method} {url}: the body broke: {e}")).to_bytes();
        Response { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    })
    .await
}

/// The value of the Prometheus sample whose line starts with `series` (name and labels), 0 when
/// absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|value| value.trim().parse().ok())).unwrap_or(0.0)
}
