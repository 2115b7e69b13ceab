//! The cost meter end to end (`docs/PROTOCOL.md` §2–3 `stats`, §8 `/metrics`): kube-sim, the
//! proxy and the native client on real sockets. What a connection asks with `stats` is what its
//! subscriptions and the upstream watch they share cost, and `/metrics` has the same upstream
//! counters per cluster and resource, never for a resource the cluster does not serve.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, kubeconfig, list, sim_client};
use kubemux_proxy::ProxySettings;
use kubemux_testkit::http::metric;
use kubemux_testkit::wait::poll;
use serde_json::{Value, json};

const MAPS: &str = "/api/v1/namespaces/demo/configmaps";

fn count(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{pointer} is a count in {stats}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_say_what_a_connection_and_its_shared_upstream_cost() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let (a, b) = (NativeClient::connect(&proxy.mux_url(), fast_config(1)), NativeClient::connect(&proxy.mux_url(), fast_config(2)));
    for client in [&a, &b] {
        client.watch("maps", "sim", MAPS, None).await.unwrap();
        client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.synced.contains_key("maps")).await.unwrap();
    }
    // A resource the cluster does not serve: a fatal 404, and no `/metrics` series for it.
    a.watch("nothing", "sim", "/api/v1/namespaces/demo/nosuchthings", None).await.unwrap();
    a.wait_for(Duration::from_secs(10), "the 404", |v| !v.errors_of("nothing").is_empty()).await.unwrap();
    let objects = list(&api, MAPS).await.len() as u64;
    assert!(objects > 0, "the demo namespace has config maps");

    let first = a.stats().await.unwrap();
    assert_eq!(first["subscriptions"].as_object().map(|s| s.len()), Some(1), "the ended subscription is not listed: {first}");
    assert_eq!(count(&first, "/subscriptions/maps/upstream/subscribers"), 2, "both connections share one upstream watch: {first}");
    assert_eq!(count(&first, "/subscriptions/maps/events"), objects, "the snapshot: {first}");
    assert_eq!(count(&first, "/subscriptions/maps/upstream/events"), objects, "the list's items: {first}");
    assert!(count(&first, "/subscriptions/maps/upstream/requests") >= 1, "{first}");
    assert!(count(&first, "/subscriptions/maps/upstream/bytes") > count(&first, "/subscriptions/maps/bytes") / 2, "what the API server sent, about what went to the client: {first}");
    assert!(count(&first, "/connection/framesOut") > objects, "the snapshot, its synced and the 404: {first}");
    assert!(count(&first, "/connection/bytesOut") >= count(&first, "/subscriptions/maps/bytes"), "{first}");
    assert!(count(&first, "/connection/framesIn") >= 3, "two watches and the stats request (and any pings): {first}");
    assert_eq!(count(&first, "/subscriptions/maps/resets"), 0, "{first}");

    // One change upstream: one event more in, one more out to each subscriber.
    let maps: Api<ConfigMap> = Api::namespaced(api.clone(), "demo");
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "metered"}, "data": {"k": "v"}})).unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    a.wait_for(Duration::from_secs(10), "the new map", |v| v.caches["maps"].keys().any(|(_, name)| name == "metered")).await.unwrap();
    let second = a.stats().await.unwrap();
    assert_eq!(count(&second, "/subscriptions/maps/events"), objects + 1, "{second}");
    assert_eq!(count(&second, "/subscriptions/maps/upstream/events"), objects + 1, "{second}");
    assert!(count(&second, "/subscriptions/maps/upstream/bytes") > count(&first, "/subscriptions/maps/upstream/bytes"), "{second}");

    // `/metrics`: the same upstream counters, by cluster and resource; nothing for the 404.
    let metrics = format!("{}/metrics", proxy.http_url());
    let text = kubemux_testkit::http::get(&metrics).await.body;
    assert_eq!(metric(&text, r#"kubemux_upstream_objects_total{cluster="sim",resource="configmaps"} "#), (objects + 1) as f64, "{text}");
    assert_eq!(metric(&text, r#"kubemux_upstream_subscribers{cluster="sim",resource="configmaps"} "#), 2.0, "{text}");
    assert!(!text.contains("nosuchthings"), "a resource the cluster does not serve has no series: {text}");

    // The other connection leaves: the watch is shared by one. `stats` pushes nothing: a poll.
    b.unwatch("maps");
    poll("the upstream watch to count one subscriber", Duration::from_secs(10), || async {
        let stats = a.stats().await.map_err(|e| e.to_string())?;
        if count(&stats, "/subscriptions/maps/upstream/subscribers") == 1 { Ok(()) } else { Err(stats.to_string()) }
    })
    .await;
    let text = kubemux_testkit::http::get(&metrics).await.body;
    assert_eq!(metric(&text, r#"kubemux_upstream_subscribers{cluster="sim",resource="configmaps"} "#), 1.0, "{text}");
}
