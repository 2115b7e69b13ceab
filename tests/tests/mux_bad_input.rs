//! Malformed `watch` frames carrying an id: each is a fatal `BadRequest` for that id alone
//! (PROTOCOL.md §2), and the connection and its other subscriptions live on (DESIGN.md
//! invariant 1).

use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_proxy::ProxySettings;
use serde_json::json;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// `query` that is not an object (`[]`, `["app=web"]`, a string) is refused for its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_is_not_an_object_is_a_fatal_bad_request_for_its_id() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(11));
    client.watch("good", "sim", CONFIGMAPS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the good subscription synced", |v| v.synced.contains_key("good")).await.unwrap();

    let bad = [("empty", "[]"), ("selector-list", r#"["app=web"]"#), ("string", r#""app=web""#)];
    for (id, query) in bad {
        client.send_raw(&format!(r#"{{"op":"watch","id":"{id}","cluster":"sim","path":"{CONFIGMAPS}","query":{query}}}"#));
    }
    let view = client.wait_for(Duration::from_secs(10), "an error for every bad watch", |v| bad.iter().all(|(id, _)| !v.errors_of(id).is_empty())).await.unwrap();
    for (id, query) in bad {
        let (_, fatal, status) = view.errors.iter().find(|(i, _, _)| i.as_deref() == Some(id)).unwrap();
        assert_eq!((status.code, status.reason.as_str(), *fatal), (400, "BadRequest", true), "query {query}: {status:?}");
        assert!(!view.synced.contains_key(id), "query {query} was not served");
    }
    assert_eq!(view.opens(), 1, "the connection stayed open");

    // The good subscription still receives.
    let data = json!({"metadata": {"name": "after-the-bad-input"}});
    api.request::<serde_json::Value>(http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(data.to_string().into_bytes()).unwrap()).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the new object on the good subscription", |v| v.caches.get("good").is_some_and(|c| c.len() == 1)).await.unwrap();
    sim.shutdown().await;
}
