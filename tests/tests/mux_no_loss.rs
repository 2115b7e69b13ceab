//! No lost and no phantom state (DESIGN.md invariant 2): whatever happens between the client,
//! the proxy and the API server, the client's cache ends equal to the simulator's list, object
//! by object.

use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, View, fast_config};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig, list, same_objects, sim_client};
use kubemux_testkit::sim::revisions_pass;
use kubemux_testkit::wait::poll;
use kubemux_proxy::ProxySettings;
use kubemux_proxy::registry::RegistrySettings;

const PODS: &str = "/api/v1/namespaces/demo/pods";

async fn start_sim(bookmark_interval: Duration) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 50.0, bookmark_interval, ..SimConfig::default() }).await.unwrap()
}

fn settings(port: u16) -> ProxySettings {
    ProxySettings {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        registry: RegistrySettings { idle_timeout: Duration::from_secs(2), ..RegistrySettings::default() },
        ..ProxySettings::default()
    }
}

/// Stops churn, then waits until the client's cache equals the simulator's list (the client
/// says when its view changes).
async fn assert_converges(sim: &Sim, client: &NativeClient, path: &str) -> View {
    let api = sim_client(sim).await;
    hook(&api, "POST", "/_sim/churn?perSecond=0").await;
    let truth = list(&api, path).await;
    let cache = |view: &View| view.caches.get("pods").cloned().unwrap_or_default();
    match client.wait_for(Duration::from_secs(20), "the cache to equal the simulator's list", |view| same_objects(&cache(view), &truth).is_ok()).await {
        Ok(view) => view,
        Err(timeout) => panic!("{timeout}; the client never converged: {}", same_objects(&cache(&client.view()), &truth).unwrap_err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_and_restarted_repeatedly() {
    let sim = start_sim(Duration::from_secs(1)).await;
    let config = kubeconfig(&[("sim", &sim.url(), None)]);
    let mut proxy = ProxyProcess::start(settings(0), config.clone());
    let port = proxy.addr().port();
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(3));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the first snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    for round in 1..=4 {
        let events = client.view().events["pods"];
        client.wait_for(Duration::from_secs(10), "churn before the kill", |v| v.events["pods"] > events + 3).await.unwrap();
        proxy.kill();
        client.wait_for(Duration::from_secs(10), "the client noticing", |v| v.opens() == round && v.states.last() != Some(&kubemux_protocol::client::ConnectionState::Open)).await.unwrap();
        // Changes happen while no proxy runs.
        revisions_pass(&sim, 10, Duration::from_secs(10)).await;
        proxy = ProxyProcess::start(settings(port), config.clone());
        client.wait_for(Duration::from_secs(15), "reconnected and synced", |v| v.opens() == round + 1 && v.synced["pods"] > round).await.unwrap();
    }
    let view = assert_converges(&sim, &client, PODS).await;
    assert!(view.opens() >= 5, "{:?}", view.states);
    // Each new proxy answered the resume from its store (the objects changed since the client's
    // version and the keys it holds) instead of resetting it.
    assert_eq!(view.resets.get("pods"), None, "resumed without a reset after every restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_resets_and_watch_close_resumes_transparently() {
    let sim = start_sim(Duration::from_secs(1)).await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(0), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(4));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.synced.contains_key("pods")).await.unwrap();

    // The upstream watch ends cleanly: the proxy re-watches from its last version, no reset.
    let stats = hook(&api, "GET", "/_sim/stats").await;
    hook(&api, "POST", "/_sim/watches/close").await;
    // The simulator's counters push nothing: a poll. (Events already in flight from the closed
    // watch can reach the client before the new watch request does, so events alone do not
    // show the re-watch.)
    // A generous deadline: on a loaded 2-core machine the re-watch once took longer than 10 s.
    let after = poll("the proxy to re-watch the closed upstream watch", Duration::from_secs(30), || async {
        let now = hook(&api, "GET", "/_sim/stats").await;
        if now["watchRequests"].as_u64() > stats["watchRequests"].as_u64() { Ok(now) } else { Err(now.to_string()) }
    })
    .await;
    assert_eq!(after["listRequests"], stats["listRequests"], "re-watched without relisting");
    let events = client.view().events["pods"];
    let view = client.wait_for(Duration::from_secs(10), "events from the new upstream watch", |v| v.events["pods"] > events + 5).await.unwrap();
    assert_eq!(view.resets.get("pods"), None, "closing an upstream watch must not reset the client");

    // Compaction: the upstream answers 410, the proxy relists and resets its subscribers.
    hook(&api, "POST", "/_sim/compact").await;
    client.wait_for(Duration::from_secs(10), "a reset after 410", |v| v.resets.get("pods") == Some(&1) && v.synced["pods"] >= 2).await.unwrap();
    assert_converges(&sim, &client, PODS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_restarted() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(0), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(5));
    client.watch("pods", "sim", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    let stats = hook(&api, "GET", "/_sim/stats").await;
    // Longer than the proxy's 2 s idle timeout: the open watch goes silent, bookmarks too.
    hook(&api, "POST", "/_sim/watches/stall?seconds=4").await;
    // The simulator's counters push nothing: a poll.
    let restarted = poll("the proxy to restart the silent upstream watch", Duration::from_secs(10), || async {
        let now = hook(&api, "GET", "/_sim/stats").await;
        if now["watchRequests"].as_u64() > stats["watchRequests"].as_u64() { Ok(now) } else { Err(now.to_string()) }
    })
    .await;
    assert_eq!(restarted["listRequests"], stats["listRequests"], "a stall resumes without relisting");
    let events = client.view().events["pods"];
    client.wait_for(Duration::from_secs(15), "events after the stall", |v| v.events["pods"] > events + 5).await.unwrap();
    assert_converges(&sim, &client, PODS).await;
}
