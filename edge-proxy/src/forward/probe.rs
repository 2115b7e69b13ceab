//! A forward's optional probe (`probe:`, off by default): one connection into the app through
//! a tunnel to the picked pod, opened as any connection is, every `probeInterval`. A failure
//! makes the forward `Degraded` (`probe failed`) until a probe passes.

use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::TokioIo;

use super::spec::Probe;
use super::tunnel::Ended;
use super::worker::{Stream, refusal_or};

/// Runs one probe over `stream`, within `timeout`.
pub(super) async fn check(probe: &Probe, stream: Stream, timeout: Duration, host: &str) -> Result<(), String> {
    let Stream { io, ended } = stream;
    match probe {
        // The API server reports a failed dial on the port's error channel at once; the
        // channel protocol has no word for success, so silence for `timeout` is one.
        Probe::Tcp => {
            let outcome = match tokio::time::timeout(timeout, ended).await {
                Ok(Ok(Ended::Refused(why))) => Err(why),
                Ok(Ok(Ended::Silent(_))) => Err("the tunnel answered no ping".to_owned()),
                Ok(Ok(Ended::Closed | Ended::Stopped) | Err(_)) | Err(_) => Ok(()),
            };
            drop(io);
            outcome
        }
        Probe::Http { path } => {
            let get = async {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
                let request = http::Request::get(path.as_str())
                    .header(http::header::HOST, host)
                    .header(http::header::USER_AGENT, concat!("kubemux-probe/", env!("CARGO_PKG_VERSION")))
                    .body(Body::empty())
                    .map_err(|e| e.to_string())?;
                tokio::select! {
                    response = sender.send_request(request) => response.map(|r| r.status()).map_err(|e| e.to_string()),
                    ended = connection => Err(ended.err().map_or_else(|| "the connection closed".to_owned(), |e| e.to_string())),
                }
            };
            let status = match tokio::time::timeout(timeout, get).await {
                Ok(Ok(status)) => status,
                Ok(Err(error)) => return Err(refusal_or(ended, format!("GET {path}: {error}")).await),
                Err(_) => return Err(format!("GET {path}: no answer within {:.1} s", timeout.as_secs_f64())),
            };
            if (200..400).contains(&status.as_u16()) { Ok(()) } else { Err(format!("GET {path} answered {status}")) }
        }
    }
}
