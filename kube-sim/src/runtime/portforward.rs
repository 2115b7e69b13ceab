//! `portforward` over the legacy WebSocket channel protocol (reference §7.1): for the port at
//! index `i`, data on channel `2i` and errors on `2i+1`, each opened by the 2-byte
//! little-endian port number; one TCP connection per port per WebSocket; the socket closes
//! when every port's connection is done.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::StreamExt;
use kubemux_protocol::channel::portforward::{data_channel, error_channel, port_prefix};
use kubemux_protocol::channel::{self, ChannelProtocol, Decoded};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::options::{annotation, pod_uid};
use super::ws::{Connection, Outgoing};

/// Client chunks queued per port before the read loop waits for the pod side.
const PORT_QUEUE: usize = 64;
/// Read buffer for the pod side.
const READ_BUFFER: usize = 32 * 1024;

/// The annotation prefix that redirects a port elsewhere: `kube-sim/port-8080: HOST:PORT`.
pub(crate) const PORT_ANNOTATION_PREFIX: &str = "kube-sim/port-";

/// Where one forwarded port goes.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// Connect here; the forward also ends when `lifetime` (the pod or container) ends.
    Connect { address: String, lifetime: Option<CancellationToken> },
    /// Nothing listens on that port in the pod.
    Nothing,
}

/// One requested port.
#[derive(Debug, Clone)]
pub(super) struct PortPlan {
    pub port: u16,
    pub target: Target,
    /// The runtime's message when nothing accepts the connection.
    pub refused: String,
}

/// Everything an upgraded port-forward needs, decided before the upgrade.
pub(crate) struct ForwardPlan {
    protocol: ChannelProtocol,
    ports: Vec<PortPlan>,
    pod: String,
    uid: String,
    namespace: String,
    /// Who asked (for `/_sim/stats`).
    user: String,
}

/// containerd's message when a pod port refuses the connection.
fn refused_message(port: u16, pod: &str, uid: &str) -> String {
    format!(
        "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to localhost:{port} inside namespace \"/var/run/netns/cni-{uid}\", \
         IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: connection refused"
    )
}

/// Resolves each port: the pod's redirect annotation, else the pod's own listener.
pub(crate) fn plan(runtime: &Runtime, pod: &Value, namespace: &str, name: &str, ports: &[u16], protocol: ChannelProtocol, user: String) -> ForwardPlan {
    // The request may have beaten the kubelet to this pod's first event.
    runtime.ensure_pod(pod);
    let uid = pod_uid(pod);
    let ports = ports.iter().map(|&port| resolve_port(runtime, pod, namespace, name, port)).collect();
    ForwardPlan { protocol, ports, pod: name.to_owned(), uid: uid.to_owned(), namespace: namespace.to_owned(), user }
}

/// Where `port` of the pod goes now: nowhere when a hook refuses it, else the pod's redirect
/// annotation, else the pod's own listener (of this incarnation: a pod replaced since has none).
pub(super) fn resolve_port(runtime: &Runtime, pod: &Value, namespace: &str, name: &str, port: u16) -> PortPlan {
    let uid = pod_uid(pod);
    let target = if runtime.forwards.is_refused(namespace, name, port) {
        Target::Nothing
    } else {
        match annotation(pod, &format!("{PORT_ANNOTATION_PREFIX}{port}")) {
            Some(address) => Target::Connect { address: address.trim().to_owned(), lifetime: runtime.pods.lifetime(namespace, name, uid) },
            None => match runtime.pods.listener(namespace, name, uid, port) {
                Some((addr, lifetime)) => Target::Connect { address: addr.to_string(), lifetime: Some(lifetime) },
                None => Target::Nothing,
            },
        }
    };
    PortPlan { port, target, refused: refused_message(port, name, uid) }
}

/// Runs an upgraded port-forward until every port is done, the client goes, or shutdown.
pub(crate) async fn run(runtime: Arc<Runtime>, socket: WebSocket, plan: ForwardPlan) {
    let ForwardPlan { protocol, ports, pod, uid, namespace, user } = plan;
    let stop = runtime.stop.clone();
    let registration = runtime.forwards.register_connection(&user, &namespace, &pod, super::forwards::Transport::Channel);
    let mut idle_timeout = runtime.forwards.idle_timeout();
    // Any frame either way is activity (a load balancer counts bytes, pings too).
    let activity = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let mut conn = Connection::start(socket, stop.clone());
    for (index, p) in ports.iter().enumerate() {
        let prefix = port_prefix(p.port);
        let sent = conn.send(channel::encode(protocol, data_channel(index), &prefix)).await && conn.send(channel::encode(protocol, error_channel(index), &prefix)).await;
        if !sent {
            conn.abandon().await;
            return;
        }
    }
    let mut relays = JoinSet::new();
    let mut to_pod = Vec::with_capacity(ports.len());
    for (index, p) in ports.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(PORT_QUEUE);
        to_pod.push(tx);
        let failure_prefix = format!("error forwarding port {} to pod {pod}, uid {uid}", p.port);
        relays.spawn(relay(index, p, failure_prefix, rx, conn.out.clone(), protocol, activity.clone()));
    }
    let touch = |activity: &std::sync::Mutex<tokio::time::Instant>| *activity.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
    let all_done = loop {
        let idle_deadline = idle_timeout.borrow_and_update().map(|timeout| *activity.lock().unwrap_or_else(|p| p.into_inner()) + timeout);
        tokio::select! {
            _ = stop.cancelled() => break false,
            _ = registration.cut.cancelled() => break false,
            _ = registration.blackhole.cancelled() => {
                // Silent: nothing read, nothing written, the socket held open until a cut, the
                // client's close of its side, or shutdown.
                relays.abort_all();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = registration.cut.cancelled() => {}
                }
                break false;
            }
            _ = idle_timeout.changed() => continue,
            () = async { if let Some(at) = idle_deadline { tokio::time::sleep_until(at).await } }, if idle_deadline.is_some() => {
                let last = *activity.lock().unwrap_or_else(|p| p.into_inner());
                if idle_timeout.borrow().is_some_and(|timeout| last + timeout <= tokio::time::Instant::now()) {
                    break false;
                }
                continue;
            }
            done = relays.join_next() => {
                if done.is_none() || relays.is_empty() {
                    break true;
                }
            }
            message = conn.incoming.next() => {
                touch(&activity);
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(text @ Message::Text(_))) => text.into_data(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break false,
                };
                // The client writes raw bytes on data channels; anything else is dropped.
                if let Ok(Decoded::Data { channel, payload }) = channel::decode(protocol, &data)
                    && channel % 2 == 0
                    && let Some(sink) = to_pod.get(usize::from(channel / 2))
                {
                    tokio::select! {
                        // A port that is already done just drops what arrives for it.
                        _ = sink.send(Bytes::from(payload)) => {}
                        _ = stop.cancelled() => break false,
                    }
                }
            }
        }
    };
    if all_done {
        conn.close().await;
    } else {
        // Closing the WebSocket closes the pod-side connections.
        relays.abort_all();
        conn.abandon().await;
    }
}

/// One port: connect, then copy both ways until the pod side ends (or its pod does).
async fn relay(
    index: usize,
    plan: PortPlan,
    failure_prefix: String,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Outgoing>,
    protocol: ChannelProtocol,
    activity: Arc<std::sync::Mutex<tokio::time::Instant>>,
) {
    let report = |message: String| {
        let out = out.clone();
        async move {
            let _ = out.send(Outgoing::Frame(channel::encode(protocol, error_channel(index), message.as_bytes()))).await;
        }
    };
    let (address, lifetime) = match plan.target {
        Target::Nothing => return report(plan.refused).await,
        Target::Connect { address, lifetime } => (address, lifetime),
    };
    let stream = match TcpStream::connect(&address).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return report(plan.refused).await,
        Err(error) => return report(format!("{failure_prefix}: failed to connect to {address}: {error}")).await,
    };
    let (mut pod_read, mut pod_write) = stream.into_split();
    let to_client = async {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            match pod_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    *activity.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                    if out.send(Outgoing::Frame(channel::encode(protocol, data_channel(index), &buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let to_pod = async {
        while let Some(bytes) = from_client.recv().await {
            if pod_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // There is no half-close in this protocol: the port is done when the pod side ends.
        std::future::pending::<()>().await
    };
    let lifetime = async {
        match lifetime {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = to_client => {}
        _ = to_pod => {}
        _ = lifetime => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_message_names_port_pod_and_uid() {
        let m = refused_message(8080, "web", "u-1");
        assert!(m.starts_with("error forwarding port 8080 to pod web, uid u-1: failed to connect to localhost:8080 inside namespace"));
        assert!(m.contains("connection refused"));
    }

    /// Bytes go both ways through a relay, and the port's first data is the pod's answer.
    #[tokio::test]
    async fn relay_copies_both_ways_and_ends_with_the_pod() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).await.unwrap();
            socket.write_all(&buf.to_ascii_uppercase()).await.unwrap();
            // Dropping the socket ends the port.
        });
        let (to_pod, from_client) = mpsc::channel(4);
        let (out, mut frames) = mpsc::channel(16);
        let plan = PortPlan { port: 80, target: Target::Connect { address, lifetime: None }, refused: String::new() };
        let relay = tokio::spawn(relay(1, plan, String::new(), from_client, out, ChannelProtocol::V4, Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()))));
        to_pod.send(Bytes::from_static(b"hello")).await.unwrap();
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), frames.recv()).await.unwrap().unwrap();
        match frame {
            Outgoing::Frame(kubemux_protocol::channel::WsPayload::Binary(b)) => assert_eq!(b, b"\x02HELLO"),
            other => panic!("unexpected {other:?}"),
        }
        server.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), relay).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_reports_on_the_error_channel() {
        let (_to_pod, from_client) = mpsc::channel(1);
        let (out, mut frames) = mpsc::channel(4);
        let plan = PortPlan { port: 9, target: Target::Nothing, refused: "refused!".into() };
        relay(0, plan, String::new(), from_client, out, ChannelProtocol::V4Base64, Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()))).await;
        match frames.recv().await.unwrap() {
            Outgoing::Frame(kubemux_protocol::channel::WsPayload::Text(t)) => assert_eq!(t, "1cmVmdXNlZCE="),
            other => panic!("unexpected {other:?}"),
        }
    }
}
