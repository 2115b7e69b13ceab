//! Identities (DESIGN.md invariant 7): tokens never share an upstream watch, an `auth` refresh
//! heals a subscription waiting on a 401, and the plain HTTP endpoints report what they should.

use std::time::Duration;

use futures::SinkExt;
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig};
use kubemux_testkit::http;
use kubemux_testkit::wait::poll;
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::ProxySettings;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PODS: &str = "/api/v1/namespaces/demo/pods";

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

async fn sim_with_users() -> Sim {
    let users = ["admin:admin-token:*", "alice:alice-token:demo", "bob:bob-token:demo"].map(|u| User::parse(u).unwrap()).to_vec();
    Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.unwrap()
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_never_share_an_upstream_watch() {
    let sim = sim_with_users().await;
    let admin = {
        let mut config = kube::Config::new(sim.url().parse().unwrap());
        config.auth_info.token = Some("admin-token".to_owned().into());
        kube::Client::try_from(config).unwrap()
    };
    // The proxy's own credentials are admin's; the clients bring their own tokens.
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), Some("admin-token"))]));
    let before = hook(&admin, "GET", "/_sim/stats").await;
    let alice = NativeClient::connect(&proxy.mux_url(), fast_config(1));
    alice.auth("sim", "alice-token");
    alice.watch("pods", "sim", PODS, None).await.unwrap();
    let bob = NativeClient::connect(&proxy.mux_url(), fast_config(2));
    bob.auth("sim", "bob-token");
    bob.watch("pods", "sim", PODS, None).await.unwrap();
    for client in [&alice, &bob] {
        client.wait_for(Duration::from_secs(10), "a snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    }
    let after = hook(&admin, "GET", "/_sim/stats").await;
    // Each upstream lists before its subscribers get `synced` and opens its watch after, so the
    // lists are what is settled at this point: one list (and so one upstream) per identity.
    assert_eq!(after["listRequests"].as_u64().unwrap() - before["listRequests"].as_u64().unwrap(), 2, "one upstream watch per identity");
    // Alice's token does not reach kube-system, whatever bob or the proxy may see.
    alice.watch("system", "sim", "/api/v1/namespaces/kube-system/pods", None).await.unwrap();
    let view = alice.wait_for(Duration::from_secs(10), "a 403 for alice", |v| !v.errors_of("system").is_empty()).await.unwrap();
    assert_eq!(view.errors_of("system")[0].code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_refresh_heals_a_subscription_waiting_on_401() {
    let sim = sim_with_users().await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), Some("admin-token"))]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(3));
    client.auth("sim", "expired-token");
    client.watch("pods", "sim", PODS, None).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "a 401", |v| !v.errors_of("pods").is_empty()).await.unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("pods")).unwrap();
    assert_eq!((status.code, *fatal), (401, false), "401 waits for a new token");
    client.auth("sim", "alice-token");
    client.wait_for(Duration::from_secs(10), "the snapshot with the new token", |v| v.synced.contains_key("pods") && v.caches.get("pods").is_some_and(|c| c.len() >= 6)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subprotocol_is_the_connection_identity_and_never_echoed() {
    let sim = sim_with_users().await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let mut request = proxy.mux_url().into_client_request().unwrap();
    // base64url("alice-token") without padding.
    request.headers_mut().insert("sec-websocket-protocol", format!("{SUBPROTOCOL}, base64url.bearer.authorization.k8s.io.YWxpY2UtdG9rZW4").parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], SUBPROTOCOL);
    ws.send(Message::Text(r#"{"op":"watch","id":"sys","cluster":"sim","path":"/api/v1/namespaces/kube-system/pods"}"#.into())).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut ws)).await.unwrap().unwrap().unwrap();
    let text = frame.into_text().unwrap();
    assert!(text.contains(r#""code":403"#) && text.contains("alice"), "the watch ran as alice: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_health_and_metrics() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None), ("down", &dead_url, None)]));
    let base = proxy.http_url();
    assert_eq!(http::get(&format!("{base}/healthz")).await.status, 200);
    // `/clusters` pushes nothing: a poll.
    let clusters = poll("both health checks to report", Duration::from_secs(15), || async {
        let response = http::get(&format!("{base}/clusters")).await.body;
        if response.contains("\"unreachable\"") && response.contains("\"ok\"") { Ok(response) } else { Err(response) }
    })
    .await;
    assert!(clusters.contains(r#"{"name":"down","status":"unreachable","version":null}"#), "{clusters}");
    assert!(clusters.contains(r#""name":"sim","status":"ok","version":"v1.32.0-kube-sim""#), "{clusters}");
    assert_eq!(http::get(&format!("{base}/readyz")).await.status, 200);

    let client = NativeClient::connect(&proxy.mux_url(), fast_config(4));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.watch("down", "down", "/api/v1/pods", None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "a snapshot and an error", |v| v.synced.contains_key("pods") && !v.errors_of("down").is_empty()).await.unwrap();
    let metrics = http::get(&format!("{base}/metrics")).await.body;
    for line in ["kubemux_connections 1", "kubemux_subscriptions 2", "kubemux_upstream_watches 2", "kubemux_errors_total{reason=\"ServiceUnavailable\"}", "kubemux_events_out_total", "kubemux_bytes_out_total", "kubemux_queued_bytes"] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}
