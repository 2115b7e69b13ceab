//! The limits of `docs/PROTOCOL.md` §6 and the policy checks of §1, and a slow client that costs
//! only its own subscription a reset (DESIGN.md invariant 5).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, http_get, kubeconfig, list, same_objects, sim_client};
use kubemux_protocol::client::{ClientConfig, ClientCore, Output};
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::ProxySettings;
use kubemux_proxy::mux::MuxSettings;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn settings(mux: MuxSettings) -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), mux, ..ProxySettings::default() }
}

async fn empty_sim() -> Sim {
    Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap()
}

fn request(url: &str, origin: Option<&str>, protocol: Option<&str>) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    if let Some(protocol) = protocol {
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_is_checked_before_the_upgrade() {
    let sim = empty_sim().await;
    let proxy = ProxyProcess::start(settings(MuxSettings::default()), kubeconfig(&[("sim", &sim.url(), None)]));
    let refused = |result: Result<_, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade should have been refused"),
    };
    let evil = tokio_tungstenite::connect_async(request(&proxy.mux_url(), Some("https://evil.example"), Some(SUBPROTOCOL))).await;
    assert_eq!(refused(evil), 403);
    let no_protocol = tokio_tungstenite::connect_async(request(&proxy.mux_url(), None, None)).await;
    assert_eq!(refused(no_protocol), 400);
    // The proxy's own origin is allowed.
    let own = format!("http://{}", proxy.addr());
    let (_, response) = tokio_tungstenite::connect_async(request(&proxy.mux_url(), Some(&own), Some(SUBPROTOCOL))).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], SUBPROTOCOL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_513th_subscription_is_refused_and_the_others_live_on() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(MuxSettings::default()), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(7));
    for i in 0..513 {
        client.watch(&format!("s{i}"), "sim", CONFIGMAPS, None).await.unwrap();
    }
    let view = client.wait_for(Duration::from_secs(30), "512 synced and one refusal", |v| v.synced.len() == 512 && !v.errors_of("s512").is_empty()).await.unwrap();
    let refusal = view.errors_of("s512")[0];
    assert_eq!((refusal.code, refusal.reason.as_str()), (429, "TooManyRequests"));
    assert!(view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("s512")).unwrap().1, "fatal for that watch");
    // The others still receive.
    let data = json!({"metadata": {"name": "after-the-limit"}});
    api.request::<serde_json::Value>(http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(data.to_string().into_bytes()).unwrap()).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the new object on every live subscription", |v| (0..512).all(|i| v.caches.get(&format!("s{i}")).is_some_and(|c| c.len() == 1))).await.unwrap();
}

/// A client that stops reading: its queue overflows, the proxy drops its events, and once it
/// reads again it gets `reset` and a snapshot that ends equal to the simulator's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_a_reset_and_converges() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let padding = "p".repeat(40 * 1024);
    for i in 0..20 {
        let body = json!({"metadata": {"name": format!("big-{i}")}, "data": {"padding": padding}});
        api.request::<serde_json::Value>(http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap()).await.unwrap();
    }
    let proxy = ProxyProcess::start(settings(MuxSettings { max_queued_bytes: 256 * 1024, ..MuxSettings::default() }), kubeconfig(&[("sim", &sim.url(), None)]));

    // A socket with a tiny receive window, driven by the client core by hand.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(proxy.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request(&proxy.mux_url(), None, Some(SUBPROTOCOL)), stream).await.unwrap();
    let mut core = ClientCore::new(ClientConfig::default());
    core.watch("maps", "sim", CONFIGMAPS, None).unwrap();
    core.start(0);
    for output in core.on_open(0) {
        if let Output::Send(text) = output {
            ws.send(Message::Text(text.into())).await.unwrap();
        }
    }

    // Not reading: change every object again and again until the proxy reports an overflow.
    let metrics_url = format!("{}/metrics", proxy.http_url());
    let mut round = 0;
    let overflowed = loop {
        round += 1;
        for i in 0..20 {
            let patch = json!({"data": {"round": round.to_string()}});
            let request = http::Request::patch(format!("{CONFIGMAPS}/big-{i}")).header("content-type", "application/merge-patch+json").body(patch.to_string().into_bytes()).unwrap();
            api.request::<serde_json::Value>(request).await.unwrap();
        }
        let metrics = http_get(&metrics_url).await;
        if metrics.lines().any(|l| l.starts_with("kubemux_overflows_total ") && !l.ends_with(" 0")) {
            break metrics;
        }
        assert!(round < 200, "no overflow after {round} rounds of 20 x 40 KiB changes");
    };
    let queued: f64 = overflowed.lines().find_map(|l| l.strip_prefix("kubemux_queued_bytes ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0);
    assert!(queued <= 256.0 * 1024.0, "the proxy's queue stayed within its bound: {queued}");

    // Now read everything.
    let mut saw_reset = false;
    let truth = list(&api, CONFIGMAPS).await;
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                for output in core.on_message(1, text.as_str()) {
                    saw_reset |= matches!(output, Output::Reset { .. });
                }
                let cache = core.items("maps").unwrap().map(|o| ((o["metadata"]["namespace"].as_str().unwrap().to_owned(), o["metadata"]["name"].as_str().unwrap().to_owned()), o.clone())).collect();
                if saw_reset && same_objects(&cache, &truth).is_ok() {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(saw_reset, "the overflowed subscription got a reset");
    assert!(converged, "after the reset the client's objects equal the simulator's");
}
