//! Upstream watches that cannot go on (DESIGN.md invariants 1 and 6): a watch the proxy cannot
//! send upstream, a resume point the proxy cannot catch up from, and a task that panics. Each
//! ends or resets its own subscription with a frame that says why; the other subscriptions on
//! the connection keep receiving, and nothing is left running.

use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, http_get, kubeconfig, sim_client};
use kubemux_protocol::frames::WatchQuery;
use kubemux_proxy::ProxySettings;
use kubemux_proxy::mux::MuxSettings;
use serde_json::json;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// Settings whose client messages fit a 40 KB selector.
fn settings() -> ProxySettings {
    let mux = MuxSettings { max_message_bytes: 256 * 1024, ..MuxSettings::default() };
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), mux, ..ProxySettings::default() }
}

async fn empty_sim() -> Sim {
    Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap()
}

fn labels(selector: &str) -> Option<WatchQuery> {
    Some(WatchQuery { label_selector: Some(selector.to_owned()), field_selector: None })
}

async fn create_configmap(api: &kube::Client, name: &str) {
    let body = json!({"metadata": {"name": name}});
    let request = http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap();
    api.request::<serde_json::Value>(request).await.unwrap();
}

/// One sample of the proxy's `/metrics`, by its full name with labels.
async fn metric(proxy: &ProxyProcess, sample: &str) -> Option<f64> {
    let text = http_get(&format!("{}/metrics", proxy.http_url())).await;
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A legal selector of 40,000 bytes: URL-encoded ('=' and ',' take three bytes each) it is
/// twice that, past what a URI may hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_too_long_for_a_uri_ends_only_its_own_watch() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(1));
    client.watch("maps", "sim", CONFIGMAPS, None).await.unwrap();
    client.watch("long", "sim", CONFIGMAPS, labels(&vec!["a=b"; 10_000].join(","))).await.unwrap();

    let view = client.wait_for(Duration::from_secs(10), "an error for the long selector", |v| v.synced.contains_key("maps") && !v.errors_of("long").is_empty()).await.unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("long")).unwrap();
    assert!(*fatal, "the watch cannot be sent as it is, so it ends: {status:?}");
    assert_eq!(status.code, 414, "{status:?}");
    assert!(status.message.contains("65534"), "the message names the limit: {}", status.message);
    assert_eq!(view.errors_of("long").len(), 1, "one error: {:?}", view.errors);
    assert!(!view.synced.contains_key("long"));
    assert_eq!(metric(&proxy, "kubemux_upstream_watches").await, Some(1.0), "only the healthy watch runs");

    create_configmap(&api, "after").await;
    let view = client.wait_for(Duration::from_secs(10), "the new object on the healthy watch", |v| v.caches.get("maps").is_some_and(|c| c.len() == 1)).await.unwrap();
    assert_eq!(view.opens(), 1, "the connection never dropped");
}
