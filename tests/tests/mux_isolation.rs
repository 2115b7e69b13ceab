//! `/mux` end to end: kube-sim, the proxy and the native client on real sockets. Isolation
//! (DESIGN.md invariant 1), sharing, and the limits of `docs/PROTOCOL.md` §6.

use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig, list, sim_client};
use kubemux_testkit::http::metric;
use kubemux_testkit::wait::poll;
use kubemux_protocol::client::{ConnectionState, SubscriptionState};
use serde_json::json;
use kubemux_proxy::ProxySettings;

const PODS: &str = "/api/v1/namespaces/demo/pods";

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

async fn churning_sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 20.0, users, ..SimConfig::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_changes() {
    let sim = churning_sim(vec![]).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(1));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    let first = view.events["pods"];
    assert!(first >= 6, "the demo namespace has at least 6 pods: {first}");
    client.wait_for(Duration::from_secs(10), "live churn events", |v| v.events["pods"] > first + 5).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_one_subscription_suffers_reaches_another() {
    let admin = User::parse("admin:admin-token:*").unwrap();
    let alice = User::parse("alice:alice-token:demo").unwrap();
    let sim = churning_sim(vec![admin, alice]).await;
    // A second cluster that is down: nothing listens on its port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = kubeconfig(&[("sim", &sim.url(), Some("admin-token")), ("sim-alice", &sim.url(), Some("alice-token")), ("down", &dead_url, None)]);
    let proxy = ProxyProcess::start(settings(), config);
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(2));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the healthy snapshot", |v| v.synced.contains_key("pods")).await.unwrap();

    client.send_raw("{this is not json");
    client.send_raw(r#"{"op":"subscribe","id":"x"}"#);
    client.send_raw(r#"{"op":"watch","id":"bad-path","cluster":"sim","path":"/api/v1/../secrets"}"#);
    client.send_raw(r#"{"op":"watch","id":"bad-query","cluster":"sim","path":"/api/v1/pods","query":{"limit":"1"}}"#);
    // `query` must be an object: an array is not read as selectors.
    client.send_raw(r#"{"op":"watch","id":"array-query","cluster":"sim","path":"/api/v1/pods","query":["app=web"]}"#);
    client.send_raw(r#"{"op":"watch","id":"empty-array-query","cluster":"sim","path":"/api/v1/pods","query":[]}"#);
    client.send_raw(r#"{"op":"watch","id":"nowhere","cluster":"no-such-cluster","path":"/api/v1/pods"}"#);
    client.send_raw(r#"{"op":"watch","id":"pods","cluster":"sim","path":"/api/v1/pods"}"#);
    client.watch("forbidden", "sim-alice", "/api/v1/namespaces/kube-system/pods", None).await.unwrap();
    client.watch("down", "down", "/api/v1/pods", None).await.unwrap();

    let view = client
        .wait_for(Duration::from_secs(15), "an error for every bad request", |v| {
            v.errors.iter().filter(|(id, _, _)| id.is_none()).count() >= 2
                && ["bad-path", "bad-query", "array-query", "empty-array-query", "nowhere", "pods", "forbidden", "down"].iter().all(|id| !v.errors_of(id).is_empty())
        })
        .await
        .unwrap();
    let reason = |id: &str| view.errors_of(id)[0].reason.clone();
    assert_eq!(reason("bad-path"), "BadRequest");
    assert_eq!(reason("bad-query"), "BadRequest");
    assert_eq!(reason("array-query"), "BadRequest");
    assert_eq!(reason("empty-array-query"), "BadRequest");
    assert_eq!(reason("nowhere"), "NotFound");
    assert_eq!(reason("pods"), "AlreadyExists");
    assert_eq!(view.errors_of("forbidden")[0].code, 403);
    assert_eq!(view.errors_of("down")[0].code, 503, "an unreachable cluster is a non-fatal 503");
    let fatal = |id: &str| view.errors.iter().find(|(i, _, _)| i.as_deref() == Some(id)).unwrap().1;
    assert!(fatal("forbidden") && fatal("nowhere") && fatal("array-query") && fatal("empty-array-query") && !fatal("down") && !fatal("pods"));

    // The healthy subscription kept receiving, on the same connection, the whole time.
    let before = view.events["pods"];
    let after = client.wait_for(Duration::from_secs(10), "more churn on the healthy watch", |v| v.events["pods"] > before + 5).await.unwrap();
    assert_eq!(after.opens(), 1, "the connection never dropped: {:?}", after.states);
    assert!(!after.states.iter().any(|s| matches!(s, ConnectionState::Reconnecting { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_share_one_upstream_watch() {
    let sim = churning_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let before = hook(&sim_api, "GET", "/_sim/stats").await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let client = NativeClient::connect(&proxy.mux_url(), fast_config(i));
        client.watch("pods", "sim", PODS, None).await.unwrap();
        clients.push(client);
    }
    for client in &clients {
        client.wait_for(Duration::from_secs(20), "a snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    }
    // The upstream opens its watch after its list has reached every subscriber, so the count
    // of watches is read once it has moved (stats have no push); lists are settled already.
    let after = poll("the shared upstream to open its watch", Duration::from_secs(10), || async {
        let stats = hook(&sim_api, "GET", "/_sim/stats").await;
        if stats["watchRequests"].as_u64() > before["watchRequests"].as_u64() { Ok(stats) } else { Err(stats.to_string()) }
    })
    .await;
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("watchRequests"), 1, "one upstream watch for 50 identical subscriptions: {after}");
    assert_eq!(delta("listRequests"), 1);
    let expected = list(&sim_api, PODS).await.len();
    assert!(clients.iter().all(|c| c.view().caches["pods"].len() == expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_heals_and_says_so() {
    let sim = churning_sim(vec![]).await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(6));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.sub_states.get("pods") == Some(&SubscriptionState::Synced)).await.unwrap();
    // The next three watch requests fail with 500 (kube-rs itself retries 503s); the open watch
    // ends, so the proxy re-watches.
    let fault = json!({"pathPrefix": PODS, "status": 500, "count": 3});
    let request = http::Request::post("/_sim/faults").header("content-type", "application/json").body(fault.to_string().into_bytes()).unwrap();
    api.request_text(request).await.unwrap();
    hook(&api, "POST", "/_sim/watches/close").await;
    let view = client.wait_for(Duration::from_secs(10), "a non-fatal 500", |v| !v.errors_of("pods").is_empty()).await.unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("pods")).unwrap();
    // 500 from the fault, or 503 if the closed watch had just started ("ended immediately").
    assert!(status.code >= 500 && !*fatal, "a non-fatal server error: {status:?}");
    assert_eq!(view.sub_states.get("pods"), Some(&SubscriptionState::Stale));
    let healed = client
        .wait_for(Duration::from_secs(20), "synced again after the retries", |v| {
            v.sub_states.get("pods") == Some(&SubscriptionState::Synced) && v.synced["pods"] >= 2
        })
        .await
        .unwrap();
    let events = healed.events["pods"];
    client.wait_for(Duration::from_secs(10), "events after healing", |v| v.events["pods"] > events + 3).await.unwrap();
    assert_eq!(healed.opens(), 1, "the connection never dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_without_subscribers_retires() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut settings = settings();
    settings.registry.linger = Duration::from_millis(200);
    let proxy = ProxyProcess::start(settings, kubeconfig(&[("down", &dead_url, None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(8));
    client.watch("down", "down", "/api/v1/pods", None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the unreachable error", |v| !v.errors_of("down").is_empty()).await.unwrap();
    let metrics = format!("{}/metrics", proxy.http_url());
    let watches = async || metric(&kubemux_testkit::http::get(&metrics).await.body, "kubemux_upstream_watches ");
    assert_eq!(watches().await, 1.0);
    client.unwatch("down");
    // `/metrics` pushes nothing: a poll.
    poll("the retrying upstream watch to retire", Duration::from_secs(15), || async {
        let n = watches().await;
        if n == 0.0 { Ok(()) } else { Err(format!("kubemux_upstream_watches {n}")) }
    })
    .await;
}
