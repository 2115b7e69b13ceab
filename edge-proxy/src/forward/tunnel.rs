//! One connection (accepted locally, or a stream asked for by `/forwards/{name}/…` or the
//! probe) carried to a pod: the port-forward WebSocket dialed with the
//! legacy channel protocol (`v4.channel.k8s.io`, which every API server since 1.4 and kube-sim
//! serve), then bytes copied both ways until either side ends.
//!
//! One upstream WebSocket per local connection: the API server opens one pod connection per
//! WebSocket, so a connection's failure (the app refusing, the pod going) is that connection's
//! alone, and nothing is multiplexed that could stall its neighbours.
//!
//! Kept over pooling many connections on one tunnel (kubectl's SPDY): a reset or a refused
//! port ends one connection instead of every connection of the forward (kubernetes#111825,
//! kftray#471), nothing waits behind a neighbour on a shared tunnel, and pooling would need a
//! SPDY or KEP-4006 tunnel client in the proxy. Its cost is one upgrade per connection, which
//! `cargo xtask bench forward` measures against kubectl on the same kube-sim (BENCHMARKS.md,
//! "Port-forwards"): per connection is ahead on a single connection's latency (0.61× kubectl's
//! at p50) and on 10 parallel transfers (1.41× the throughput), even on one connection's
//! throughput, and behind only on a burst of 100 connections opened at once (about 2× slower
//! to all echo: 100 upgrades against none). The burst is the case to revisit, with a pool of
//! pre-opened upgrades rather than a shared tunnel, if a TLS API server's handshake per upgrade
//! makes it worse.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use futures::{SinkExt as _, StreamExt as _};
use prometheus_client::metrics::counter::Counter;
use kubemux_protocol::channel::portforward::{data_channel, error_channel};
use kubemux_protocol::channel::ChannelProtocol;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use crate::clusters::Cluster;
use crate::identity::Identity;
use crate::portforward::upstream::{Dial, Handshake, UpstreamIo, dial};

/// How long a closing connection waits for the other side's close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why a dial did not give a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// The pod is gone (404): another Ready pod may take the connection.
    PodGone(String),
    /// The API server refused the proxy's credentials (403) or they failed (401).
    Forbidden(String),
    /// The API server could not be reached, or failed.
    Unreachable(String),
}

/// An open tunnel to one port of one pod.
pub struct Tunnel {
    socket: WebSocketStream<UpstreamIo>,
}

/// A forward's byte counters (its `kubemux_forward_bytes_total` series), shared by its
/// connections.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    /// From the pod to the local client.
    pub bytes_in: Counter,
    /// From the local client to the pod.
    pub bytes_out: Counter,
}

/// How a carried connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// One side closed.
    Closed,
    /// The app in the pod refused the connection (the error channel said so).
    Refused(String),
    /// The forward was stopped.
    Stopped,
    /// The tunnel answered no ping for this long: black-holed (a partition, a load balancer
    /// that lost the connection); closed.
    Silent(Duration),
}

/// Dials `…/pods/{pod}/portforward?ports={port}` with the proxy's own credentials.
pub async fn open(cluster: &Cluster, namespace: &str, pod: &str, port: u16, timeout: Duration) -> Result<Tunnel, DialError> {
    let client = cluster.client(&Identity::Proxy).map_err(|e| DialError::Unreachable(format!("no client for cluster {}: {e}", cluster.name)))?;
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={port}");
    let headers = HeaderMap::new();
    let request = Dial { cluster_name: &cluster.name, client, path_and_query: &path, client_headers: &headers, identity: &Identity::Proxy, timeout };
    match dial(request, &Handshake::WebSocket(Some(ChannelProtocol::V4.name()))).await {
        Ok(upgraded) => Ok(Tunnel { socket: WebSocketStream::from_raw_socket(upgraded.io, Role::Client, None).await }),
        Err(response) => {
            let code = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|status| status["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            let message = format!("{code}: {message}");
            Err(match code {
                404 => DialError::PodGone(message),
                401 | 403 => DialError::Forbidden(message),
                _ => DialError::Unreachable(message),
            })
        }
    }
}

impl Tunnel {
    /// Copies bytes between `local` and the pod until one side ends or `stop` fires. Each
    /// socket is written by one direction only; nothing is queued between them.
    ///
    /// `keepalive` (zero: none): a WebSocket ping that often, which keeps load balancers' and
    /// kubelets' idle timers from cutting a quiet connection (any frame resets them) and
    /// proves the tunnel alive; nothing at all from the tunnel for two intervals ends the
    /// connection as [`Ended::Silent`]. The ping goes to the API server, never into the app.
    pub async fn carry<S>(self, local: S, traffic: &Traffic, stop: &CancellationToken, keepalive: Duration) -> Ended
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        let (mut sink, mut stream) = self.socket.split();
        let (mut local_read, mut local_write) = tokio::io::split(local);
        let started = Instant::now();
        // Milliseconds after `started` that the tunnel last sent anything.
        let heard = AtomicU64::new(0);
        let ended = {
        let to_pod = async {
            let mut buffer = vec![0u8; 32 * 1024];
            let period = if keepalive.is_zero() { Duration::from_secs(86_400) } else { keepalive };
            let mut pings = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                let n = tokio::select! {
                    read = local_read.read(&mut buffer[1..]) => match read {
                        Ok(0) | Err(_) => {
                            // The channel protocol has no half-close: closing the WebSocket is
                            // how the end of input reaches the pod (as kubectl and kube-rs do).
                            // What the pod sends before the API server's close is delivered.
                            let _ = sink.send(Message::Close(None)).await;
                            return None;
                        }
                        Ok(n) => n,
                    },
                    _ = pings.tick(), if !keepalive.is_zero() => {
                        let quiet = started.elapsed().saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)));
                        if quiet >= keepalive.saturating_mul(2) {
                            return Some(Ended::Silent(quiet));
                        }
                        if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                            return None;
                        }
                        continue;
                    }
                };
                buffer[0] = data_channel(0);
                if sink.send(Message::Binary(buffer[..=n].to_vec().into())).await.is_err() {
                    return None;
                }
                traffic.bytes_out.inc_by(n as u64);
            }
        };
        let from_pod = async {
            // The first frame of each channel is the 2-byte port prefix, not data.
            let mut prefixed = [false, false];
            let mut error = Vec::new();
            while let Some(Ok(message)) = stream.next().await {
                heard.store(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
                let Message::Binary(frame) = message else {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                    continue;
                };
                let Some((&channel, payload)) = frame.split_first() else { continue };
                let index = usize::from(channel == error_channel(0));
                if channel != data_channel(0) && channel != error_channel(0) {
                    continue;
                }
                let payload = if prefixed[index] {
                    payload
                } else {
                    prefixed[index] = true;
                    payload.get(2..).unwrap_or_default()
                };
                if channel == error_channel(0) {
                    error.extend_from_slice(payload);
                    if error.len() > 4096 {
                        break;
                    }
                    continue;
                }
                if local_write.write_all(payload).await.is_err() {
                    break;
                }
                traffic.bytes_in.inc_by(payload.len() as u64);
            }
            let _ = local_write.shutdown().await;
            error
        };
        tokio::pin!(to_pod, from_pod);
        tokio::select! {
            // The local side closed its end: what the pod still sends is delivered, until the
            // API server's close (bounded, in case it never comes).
            silent = &mut to_pod => match silent {
                Some(silent) => silent,
                None => tokio::select! {
                    error = &mut from_pod => ended_by(error),
                    () = stop.cancelled() => Ended::Stopped,
                    () = tokio::time::sleep(CLOSE_WAIT) => Ended::Closed,
                },
            },
            error = &mut from_pod => ended_by(error),
            () = stop.cancelled() => Ended::Stopped,
        }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = sink.send(Message::Close(None)).await;
            let _ = sink.close().await;
        })
        .await;
        ended
    }
}

fn ended_by(error: Vec<u8>) -> Ended {
    if error.is_empty() { Ended::Closed } else { Ended::Refused(String::from_utf8_lossy(&error).trim().to_owned()) }
}
