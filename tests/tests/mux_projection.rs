//! The default projection end to end (`docs/PROTOCOL.md` §2 `projection`): kube-sim, the proxy
//! and two clients on raw sockets watching the same config maps, one asking for the projection.
//! The projecting one is sent objects without `managedFields` and the last-applied annotation,
//! nothing for a write that only stamps `managedFields`, but a `bookmark` at its version, and
//! every real change; the other gets whole objects and every write, from the same upstream watch.

use kube_sim::resources::{CONFIGMAPS, NAMESPACES};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig};
use kubemux_protocol::delta::LAST_APPLIED;
use kubemux_proxy::ProxySettings;
use kubemux_testkit::ws::{mux_connect, mux_send, mux_until};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/namespaces/proj/configmaps";

fn stamp(map: &mut Value, time: &str) {
    map["metadata"]["managedFields"][0]["time"] = json!(time);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projecting_watch_gets_slim_objects_and_only_the_changes_it_shows() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let store = &sim.state().store;
    store.create(&NAMESPACES, "", json!({"metadata": {"name": "proj"}})).unwrap();
    let map = json!({
        "metadata": {
            "name": "settings",
            "annotations": {LAST_APPLIED: "{\"data\":{\"k\":\"v1\"}}", "team": "payments"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": "2026-12-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}],
        },
        "data": {"k": "v1"},
    });
    store.create(&CONFIGMAPS, "proj", map).unwrap();
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let (mut whole, mut slim) = (mux_connect(&proxy.mux_url()).await, mux_connect(&proxy.mux_url()).await);
    mux_send(&mut whole, json!({"op": "watch", "id": "whole", "cluster": "sim", "path": PATH})).await;
    mux_send(&mut slim, json!({"op": "watch", "id": "slim", "cluster": "sim", "path": PATH, "projection": "default"})).await;

    let snapshot = mux_until(&mut slim, &["synced"]).await;
    let object = &snapshot[0]["object"];
    assert_eq!(object["metadata"].get("managedFields"), None, "{object}");
    assert_eq!(object["metadata"]["annotations"], json!({"team": "payments"}), "only the last-applied annotation goes");
    assert_eq!(object["data"]["k"], "v1");
    let full = mux_until(&mut whole, &["synced"]).await;
    assert!(full[0]["object"]["metadata"]["managedFields"].is_array() && full[0]["object"]["metadata"]["annotations"][LAST_APPLIED].is_string(), "{}", full[0]);

    // A write that only stamps managedFields, then a real change.
    let stamped = store
        .modify(&CONFIGMAPS, "proj", "settings", |map| {
            stamp(map, "2026-12-01T00:00:05Z");
            Ok(())
        })
        .unwrap();
    let changed = store
        .modify(&CONFIGMAPS, "proj", "settings", |map| {
            stamp(map, "2026-12-01T00:00:09Z");
            map["data"]["k"] = json!("v2");
            Ok(())
        })
        .unwrap();
    let version = |object: &Value| object["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

    let seen = mux_until(&mut slim, &["event"]).await;
    assert_eq!(seen.len(), 2, "a bookmark for the hidden write, then the change: {seen:?}");
    assert_eq!((seen[0]["op"].as_str(), seen[0]["resourceVersion"].as_str()), (Some("bookmark"), Some(version(&stamped).as_str())), "{seen:?}");
    let event = &seen[1];
    assert_eq!((event["type"].as_str(), event["object"]["data"]["k"].as_str()), (Some("MODIFIED"), Some("v2")), "{event}");
    assert_eq!(event["object"]["metadata"]["resourceVersion"].as_str(), Some(version(&changed).as_str()));
    assert_eq!(event["object"]["metadata"].get("managedFields"), None, "{event}");

    // The other subscriber of the same upstream watch got both writes, whole.
    let first = mux_until(&mut whole, &["event"]).await;
    let second = mux_until(&mut whole, &["event"]).await;
    assert_eq!([version(&first[0]["object"]), version(&second[0]["object"])], [version(&stamped), version(&changed)]);
    assert!(first[0]["object"]["metadata"]["managedFields"].is_array());

    mux_send(&mut slim, json!({"op": "stats", "data": 1})).await;
    let stats = mux_until(&mut slim, &["stats"]).await.pop().unwrap();
    assert_eq!(stats["subscriptions"]["slim"]["hidden"], 1, "{stats}");
    assert_eq!(stats["subscriptions"]["slim"]["upstream"]["subscribers"], 2, "one upstream watch for both: {stats}");
}
