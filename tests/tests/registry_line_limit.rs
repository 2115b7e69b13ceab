//! Upstream watch lines are bounded (`RegistrySettings::max_line_bytes`): an event longer than
//! the limit is an error of its own watch, retried with backoff, never a line the proxy keeps
//! buffering. Other watches on the same connection are not disturbed.

use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig, sim_client};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::registry::RegistrySettings;
use kubemux_testkit::wait::{DEADLINE, poll};
use serde_json::json;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
/// Set low, so an ordinary ConfigMap can cross it.
const LIMIT: usize = 64 * 1024;

async fn create(api: &kube::Client, path: &str, body: serde_json::Value) {
    let request = http::Request::post(path).header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap();
    api.request::<serde_json::Value>(request).await.expect("the simulator creates it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_event_over_the_line_limit_is_an_error_of_its_watch_retried_with_backoff() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let registry = RegistrySettings { max_line_bytes: LIMIT, backoff_base: Duration::from_millis(50), backoff_cap: Duration::from_millis(200), ..RegistrySettings::default() };
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), registry, ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(1));
    client.watch("maps", "sim", CONFIGMAPS, None).await.unwrap();
    client.watch("secrets", "sim", SECRETS, None).await.unwrap();
    client.wait_for(DEADLINE, "both snapshots", |v| v.synced.contains_key("maps") && v.synced.contains_key("secrets")).await.unwrap();

    // Under the limit: an ordinary event.
    create(&api, CONFIGMAPS, json!({"metadata": {"name": "small"}, "data": {"v": "x".repeat(1000)}})).await;
    client.wait_for(DEADLINE, "the small ConfigMap", |v| v.caches.get("maps").is_some_and(|c| c.len() == 1)).await.unwrap();
    let watches_before = hook(&api, "GET", "/_sim/stats").await["watchRequests"].as_u64().unwrap();

    // Over it: the watch fails, not fatally, saying why.
    create(&api, CONFIGMAPS, json!({"metadata": {"name": "big"}, "data": {"v": "x".repeat(2 * LIMIT)}})).await;
    let view = client.wait_for(DEADLINE, "an error on the ConfigMap watch", |v| !v.errors_of("maps").is_empty()).await.unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("maps")).unwrap();
    assert!(!fatal, "the watch is retried, not ended: {status:?}");
    assert_eq!((status.code, status.reason.as_str()), (502, "BadGateway"), "{status:?}");
    assert!(status.message.contains(&LIMIT.to_string()), "the message names the limit: {}", status.message);
    assert_eq!(view.caches.get("maps").map(|c| c.len()), Some(1), "nothing of the long line reached the cache");

    // Retried with backoff: the proxy keeps coming back for the watch.
    poll("the watch to be retried", DEADLINE, || async {
        let watches = hook(&api, "GET", "/_sim/stats").await["watchRequests"].as_u64().unwrap();
        if watches >= watches_before + 3 { Ok(()) } else { Err(format!("{watches} watch requests, {watches_before} before the long line")) }
    })
    .await;

    // The other watch on the connection goes on.
    create(&api, SECRETS, json!({"metadata": {"name": "s"}, "data": {}})).await;
    let view = client.wait_for(DEADLINE, "the secret", |v| v.caches.get("secrets").is_some_and(|c| c.len() == 1)).await.unwrap();
    assert!(view.errors_of("secrets").is_empty(), "{:?}", view.errors);
    assert_eq!(view.opens(), 1, "the connection never dropped");
    proxy.stop();
    sim.shutdown().await;
}
