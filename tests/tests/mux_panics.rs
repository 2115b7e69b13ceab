//! A panic in one `/mux` connection's session (DESIGN.md invariant 1): that connection closes
//! with 1011 and the panic is counted; every other connection, and the subscriptions on it,
//! go on as if nothing happened.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, http_get, kubeconfig};
use kubemux_protocol::frames::{SUBPROTOCOL, ServerMessage};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::mux::MuxSettings;
use kubemux_testkit::wait::{DEADLINE, poll, within};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const MARKER: &str = "panic-here";

async fn socket(proxy: &ProxyProcess) -> Socket {
    let mut request = proxy.mux_url().into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    within("the /mux handshake", tokio_tungstenite::connect_async(request)).await.expect("the upgrade").0
}

/// The next message that is not a WebSocket ping or pong.
async fn next_message(socket: &mut Socket) -> Option<Message> {
    within("a message", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
}

async fn ping(socket: &mut Socket, data: &str) {
    let frame = serde_json::json!({"op": "ping", "data": data}).to_string();
    within("a send", socket.send(Message::Text(frame.into()))).await.expect("the connection takes it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_closes_its_own_connection_with_1011_only() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.unwrap();
    let mux = MuxSettings { inject_panic: Some(MARKER.to_owned()), ..MuxSettings::default() };
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), mux, ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let mut bystander = socket(&proxy).await;
    let watch = serde_json::json!({"op": "watch", "id": "pods", "cluster": "sim", "path": "/api/v1/namespaces/demo/pods"}).to_string();
    bystander.send(Message::Text(watch.into())).await.unwrap();
    let mut doomed = socket(&proxy).await;
    let watch = serde_json::json!({"op": "watch", "id": "mine", "cluster": "sim", "path": "/api/v1/namespaces/demo/pods"}).to_string();
    doomed.send(Message::Text(watch.into())).await.unwrap();

    ping(&mut doomed, MARKER).await;
    // Its own watch's frames may come first; then the close.
    let close = within("the panicking connection's close", async {
        loop {
            match next_message(&mut doomed).await {
                Some(Message::Text(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1011, "{frame:?}"),
        other => panic!("the panicking connection must close with 1011, got {other:?}"),
    }

    // The other connection answers and keeps its watch.
    ping(&mut bystander, "still-here").await;
    let pong = within("the bystander's pong", async {
        loop {
            let Some(Message::Text(text)) = next_message(&mut bystander).await else { panic!("the bystander's connection ended") };
            if let Ok(ServerMessage::Pong { data }) = ServerMessage::decode(&text) {
                return data;
            }
        }
    })
    .await;
    assert_eq!(pong, serde_json::json!("still-here"));
    let metrics = poll("the panic to be counted", DEADLINE, || async {
        let text = http_get(&format!("{}/metrics", proxy.http_url())).await;
        if text.contains("kubemux_task_panics_total{task=\"mux_session\"} 1") { Ok(text) } else { Err(text) }
    })
    .await;
    // The dead connection's subscriptions are gone from the gauge, the bystander's is not.
    assert!(metrics.contains("kubemux_connections 1"), "{metrics}");
    assert!(metrics.contains("kubemux_subscriptions 1"), "{metrics}");
    let _ = tokio::time::timeout(Duration::from_secs(2), bystander.close(None)).await;
    proxy.stop();
    sim.shutdown().await;
}
