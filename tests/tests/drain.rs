//! Graceful drain of the real binary on SIGTERM: `/readyz` turns 503 at once while everything
//! keeps working for the drain period (a new `/mux` connection is still served, so a load
//! balancer that has not noticed yet loses nothing), then every open `/mux` connection gets a
//! close frame with 1001, and the process exits 0.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{KubeconfigFile, kubeconfig, proxy_binary, start_binary};
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_testkit::http;
use kubemux_testkit::wait::{poll, within_for};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A `/mux` connection with one synced watch.
async fn watching(addr: std::net::SocketAddr) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}/mux").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the upgrade");
    use futures::SinkExt as _;
    ws.send(Message::Text(r#"{"op":"watch","id":"p","cluster":"sim","path":"/api/v1/namespaces/demo/pods"}"#.into())).await.unwrap();
    within_for(Duration::from_secs(10), "synced", async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && text.contains(r#""op":"synced""#)
            {
                return;
            }
        }
        panic!("the connection ended before synced");
    })
    .await;
    ws
}

/// The close code the connection ends with (frames before it are skipped).
async fn close_code(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Option<u16> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_serves_through_the_drain_then_closes_with_1001_and_exits_0() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 10.0, ..SimConfig::default() }).await.unwrap();
    let file = KubeconfigFile::new(&kubeconfig(&[("sim", &sim.url(), None)]));
    let args = [std::ffi::OsStr::new("--kubeconfig"), file.path().as_os_str(), "--drain-period".as_ref(), "2".as_ref()];
    let (mut child, addr) = start_binary(&proxy_binary(), &args, "info", Stdio::null()).await;
    let base = format!("http://{addr}");
    poll("ready", Duration::from_secs(10), || async {
        let status = http::get(&format!("{base}/readyz")).await.status.as_u16();
        if status == 200 { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    let mut before = watching(addr).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let readyz = poll("/readyz to turn 503", Duration::from_secs(1), || async {
        let response = http::get(&format!("{base}/readyz")).await;
        if response.status.as_u16() == 503 { Ok(response.body) } else { Err(response.status.to_string()) }
    })
    .await;
    assert!(readyz.contains("draining"), "{readyz}");
    // Still serving during the drain: plain HTTP and a brand-new /mux connection with a watch.
    assert_eq!(http::get(&format!("{base}/clusters")).await.status.as_u16(), 200);
    let mut during = watching(addr).await;

    // Then both connections get 1001, and the process exits 0.
    assert_eq!(within_for(Duration::from_secs(10), "the first connection's close", close_code(&mut before)).await, Some(1001));
    assert_eq!(within_for(Duration::from_secs(10), "the second connection's close", close_code(&mut during)).await, Some(1001));
    let status = within_for(Duration::from_secs(15), "the proxy to exit", child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}
