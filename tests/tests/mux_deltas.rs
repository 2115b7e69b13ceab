//! Deltas end to end (`docs/PROTOCOL.md` §2 `deltas` and `resync`, §3 `patch`): kube-sim, the
//! proxy and clients sharing one upstream watch of the same config maps.
//!
//! On raw sockets: a subscriber that asked for deltas gets each change to an object it holds as a
//! merge patch against the version it holds, which applied gives exactly what a whole-object
//! subscriber is sent; with the projection too, a write the projection hides comes as a patch of
//! the version alone, so every base is the previous version; a `DELETED` goes whole; a `resync`
//! is answered with `reset`, a snapshot and `synced`.
//!
//! Through the native client core: after a run of writes (real changes and managedFields-only
//! stamps) the caches of a delta and a projecting delta subscription equal the whole
//! subscription's (projected), and they were sent fewer bytes for it.

use std::time::Duration;

use kube_sim::resources::{CONFIGMAPS, NAMESPACES};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, kubeconfig};
use kubemux_protocol::client::WatchOptions;
use kubemux_protocol::delta::{LAST_APPLIED, Projection, apply_merge_patch};
use kubemux_protocol::frames::ProjectionMode;
use kubemux_proxy::ProxySettings;
use kubemux_testkit::ws::{mux_connect, mux_next, mux_send, mux_until};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/namespaces/deltas/configmaps";

fn version(object: &Value) -> String {
    object["metadata"]["resourceVersion"].as_str().unwrap().to_owned()
}

fn projected(object: &Value) -> Value {
    let mut object = object.clone();
    Projection::default().apply(&mut object);
    object
}

fn config_map(name: &str, value: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "annotations": {LAST_APPLIED: format!("{{\"data\":{{\"k\":\"{value}\"}}}}"), "team": "payments"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": "2026-12-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}],
        },
        "data": {"k": value, "padding": "x".repeat(2000)},
    })
}

async fn sim_with_namespace() -> Sim {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    sim.state().store.create(&NAMESPACES, "", json!({"metadata": {"name": "deltas"}})).unwrap();
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_subscriber_gets_patches_against_what_it_holds() {
    let sim = sim_with_namespace().await;
    let store = &sim.state().store;
    store.create(&CONFIGMAPS, "deltas", config_map("settings", "v1")).unwrap();
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let (mut whole, mut delta, mut slim) = (mux_connect(&proxy.mux_url()).await, mux_connect(&proxy.mux_url()).await, mux_connect(&proxy.mux_url()).await);
    mux_send(&mut whole, json!({"op": "watch", "id": "whole", "cluster": "sim", "path": PATH})).await;
    mux_send(&mut delta, json!({"op": "watch", "id": "delta", "cluster": "sim", "path": PATH, "deltas": true})).await;
    mux_send(&mut slim, json!({"op": "watch", "id": "slim", "cluster": "sim", "path": PATH, "deltas": true, "projection": "default"})).await;
    let mut held = mux_until(&mut delta, &["synced"]).await[0]["object"].clone();
    let mut slim_held = mux_until(&mut slim, &["synced"]).await[0]["object"].clone();
    mux_until(&mut whole, &["synced"]).await;
    let first_version = version(&held);

    // A real change: both delta subscribers get a patch against the version they hold.
    store
        .modify(&CONFIGMAPS, "deltas", "settings", |map| {
            map["metadata"]["managedFields"][0]["time"] = json!("2026-12-01T00:00:05Z");
            map["data"]["k"] = json!("v2");
            Ok(())
        })
        .unwrap();
    let sent = mux_until(&mut whole, &["event"]).await.pop().unwrap();
    let patch = mux_until(&mut delta, &["patch", "event"]).await.pop().unwrap();
    assert_eq!(patch["op"], "patch", "{patch}");
    assert_eq!((patch["base"].as_str(), patch["namespace"].as_str(), patch["name"].as_str()), (Some(first_version.as_str()), Some("deltas"), Some("settings")), "{patch}");
    assert_eq!(patch["resourceVersion"].as_str(), Some(version(&sent["object"]).as_str()));
    assert!(patch["patch"]["data"].get("padding").is_none(), "only what changed: {patch}");
    apply_merge_patch(&mut held, &patch["patch"]);
    assert_eq!(held, sent["object"], "the patch applied is the object the whole subscriber got");
    let slim_patch = mux_until(&mut slim, &["patch", "event"]).await.pop().unwrap();
    assert_eq!((slim_patch["op"].as_str(), slim_patch["base"].as_str()), (Some("patch"), Some(first_version.as_str())), "{slim_patch}");
    assert!(slim_patch["patch"]["metadata"].get("managedFields").is_none(), "{slim_patch}");
    apply_merge_patch(&mut slim_held, &slim_patch["patch"]);
    assert_eq!(slim_held, projected(&sent["object"]));

    // A managedFields-only write: hidden from the projecting one, a small patch for the other.
    let stamped = store
        .modify(&CONFIGMAPS, "deltas", "settings", |map| {
            map["metadata"]["managedFields"][0]["time"] = json!("2026-12-01T00:00:07Z");
            Ok(())
        })
        .unwrap();
    assert_eq!(mux_until(&mut whole, &["event"]).await.pop().unwrap()["object"], *stamped);
    let patch = mux_until(&mut delta, &["patch", "event"]).await.pop().unwrap();
    assert_eq!(patch["patch"], json!({"metadata": {"resourceVersion": version(&stamped), "managedFields": stamped["metadata"]["managedFields"]}}), "{patch}");
    apply_merge_patch(&mut held, &patch["patch"]);
    let touch = mux_until(&mut slim, &["bookmark", "patch", "event"]).await.pop().unwrap();
    assert_eq!(touch["op"], "patch", "with deltas a hidden change moves the copy's version: {touch}");
    assert_eq!(touch["patch"], json!({"metadata": {"resourceVersion": version(&stamped)}}), "{touch}");
    apply_merge_patch(&mut slim_held, &touch["patch"]);

    // The next real change: the projecting subscriber's base is the version it still holds.
    store
        .modify(&CONFIGMAPS, "deltas", "settings", |map| {
            map["data"]["k"] = json!("v3");
            Ok(())
        })
        .unwrap();
    let sent = mux_until(&mut whole, &["event"]).await.pop().unwrap();
    let patch = mux_until(&mut delta, &["patch", "event"]).await.pop().unwrap();
    assert_eq!(patch["base"].as_str(), Some(version(&stamped).as_str()), "{patch}");
    apply_merge_patch(&mut held, &patch["patch"]);
    assert_eq!(held, sent["object"]);
    let slim_patch = mux_until(&mut slim, &["patch", "event"]).await.pop().unwrap();
    assert_eq!(slim_patch["base"].as_str(), Some(version(&stamped).as_str()), "{slim_patch}");
    apply_merge_patch(&mut slim_held, &slim_patch["patch"]);
    assert_eq!(slim_held, projected(&sent["object"]));

    // A deletion goes whole; a resync is answered with a full state.
    store.create(&CONFIGMAPS, "deltas", config_map("other", "a")).unwrap();
    store.delete(&CONFIGMAPS, "deltas", "settings").unwrap();
    let added = mux_until(&mut delta, &["event"]).await.pop().unwrap();
    assert_eq!((added["type"].as_str(), added["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("other")));
    let deleted = mux_until(&mut delta, &["event", "patch"]).await.pop().unwrap();
    assert_eq!((deleted["op"].as_str(), deleted["type"].as_str()), (Some("event"), Some("DELETED")), "{deleted}");
    mux_send(&mut delta, json!({"op": "resync", "id": "delta"})).await;
    let answer = mux_until(&mut delta, &["synced"]).await;
    let ops: Vec<&str> = answer.iter().map(|frame| frame["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["reset", "event", "synced"], "{answer:?}");
    assert_eq!(answer[1]["object"]["metadata"]["name"], "other");
    // A resync for an id that is not active changes nothing and is not answered.
    mux_send(&mut delta, json!({"op": "resync", "id": "nobody"})).await;
    mux_send(&mut delta, json!({"op": "ping", "data": 1})).await;
    assert_eq!(mux_next(&mut delta).await, json!({"op": "pong", "data": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_core_follows_patches_to_the_servers_state_with_fewer_bytes() {
    let sim = sim_with_namespace().await;
    let store = &sim.state().store;
    for index in 0..10 {
        store.create(&CONFIGMAPS, "deltas", config_map(&format!("cm-{index}"), "0")).unwrap();
    }
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(13));
    client.watch("whole", "sim", PATH, None).await.unwrap();
    client.watch_with("delta", "sim", PATH, None, WatchOptions { projection: None, deltas: true }).await.unwrap();
    client.watch_with("slim", "sim", PATH, None, WatchOptions { projection: Some(ProjectionMode::Default), deltas: true }).await.unwrap();
    client.wait_for(Duration::from_secs(20), "every subscription synced", |view| view.settled(&["whole", "delta", "slim"])).await.unwrap();

    for round in 1..=60 {
        let name = format!("cm-{}", round % 10);
        store
            .modify(&CONFIGMAPS, "deltas", &name, |map| {
                map["metadata"]["managedFields"][0]["time"] = json!(format!("2026-12-01T00:{:02}:00Z", round));
                if round % 3 != 0 {
                    map["data"]["k"] = json!(round.to_string());
                }
                Ok(())
            })
            .unwrap();
    }
    let last = store
        .modify(&CONFIGMAPS, "deltas", "cm-0", |map| {
            map["data"]["k"] = json!("last");
            Ok(())
        })
        .unwrap();
    let last = version(&last);
    let view = client
        .wait_for(Duration::from_secs(20), "every subscription at the last write", |view| {
            ["whole", "delta", "slim"].iter().all(|id| view.caches.get(*id).and_then(|cache| cache.get(&("deltas".to_owned(), "cm-0".to_owned()))).is_some_and(|object| version(object) == last))
        })
        .await
        .unwrap();
    let whole = &view.caches["whole"];
    assert_eq!(&view.caches["delta"], whole, "the delta subscription holds exactly the whole one's objects");
    let without_version = |object: &Value| {
        let mut object = projected(object);
        object["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        object
    };
    let slim: Vec<Value> = view.caches["slim"].values().map(without_version).collect();
    assert_eq!(slim, whole.values().map(without_version).collect::<Vec<_>>(), "the projecting one holds them projected");
    assert_eq!(view.resets.get("delta").copied().unwrap_or(0) + view.resets.get("slim").copied().unwrap_or(0), 0, "no patch missed its base: no resync");

    let stats = client.stats().await.unwrap();
    let bytes = |id: &str| stats["subscriptions"][id]["bytes"].as_u64().unwrap();
    assert!(bytes("delta") * 2 < bytes("whole"), "patches cost less than whole objects: {stats}");
    assert!(bytes("slim") < bytes("delta"), "{stats}");
}
