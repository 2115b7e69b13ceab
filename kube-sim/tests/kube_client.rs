//! kube-sim through the `kube` crate, the way a Rust controller uses a cluster: a client from
//! the simulator's kubeconfig, lists, raw watches and `kube::runtime::watcher` surviving a
//! compaction (in-stream 410, then a relist).

mod common;

use std::collections::BTreeMap;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::ResourceExt as _;
use kube_sim::Seed;
use serde_json::json;

use common::{Http, Watcher, within};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"test": "kube-client"}}, "data": {"k": "v"}})).expect("a ConfigMap")
}

#[tokio::test]
async fn lists_the_demo_pods() {
    let sim = common::start(Seed::Demo).await;
    let client = common::kube_client(&sim).await;

    let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.expect("list pods in all namespaces");
    let mut listed: Vec<String> = pods.items.iter().map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())).collect();
    listed.sort();
    assert_eq!(listed, common::all_pods(&sim));
    // 3 web + 2 api + 1 hello + 2 coredns + 1 metrics-server + redis-0 + toolbox.
    assert_eq!(listed.len(), 11, "{listed:?}");
    assert!(pods.metadata.resource_version.is_some_and(|rv| !rv.is_empty()), "a list carries its resourceVersion");

    // The kubeconfig's context namespace is `default`.
    let in_default = Api::<Pod>::default_namespaced(client).list(&ListParams::default()).await.expect("list pods in default");
    let mut names: Vec<String> = in_default.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "hello-… and toolbox: {names:?}");
    assert!(names.contains(&"toolbox".to_owned()));
    assert!(names.iter().any(|n| n.starts_with("hello-")));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_watch_sees_a_change() {
    let sim = common::start(Seed::Demo).await;
    let client = common::kube_client(&sim).await;
    let api = Api::<ConfigMap>::namespaced(client, "demo");
    let rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("list RV");

    let mut events = api.watch(&WatchParams::default(), &rv).await.expect("watch starts").boxed();
    api.create(&PostParams::default(), &config_map("watched")).await.expect("create");

    let event = within("the ADDED event", events.try_next()).await.expect("watch stream healthy").expect("an event");
    match event {
        WatchEvent::Added(cm) => {
            assert_eq!(cm.name_any(), "watched");
            assert_eq!(cm.data.unwrap_or_default().get("k").map(String::as_str), Some("v"));
        }
        other => panic!("expected ADDED for the new ConfigMap, got {other:?}"),
    }
    api.delete("watched", &Default::default()).await.expect("delete");
    let event = within("the DELETED event", events.try_next()).await.expect("watch stream healthy").expect("an event");
    assert!(matches!(&event, WatchEvent::Deleted(cm) if cm.name_any() == "watched"), "{event:?}");
    sim.shutdown().await;
}

/// After `/_sim/compact` the open watch gets an in-stream 410; the watcher must start over with
/// `Init` … `InitDone`, and its store then equals a fresh list.
#[tokio::test]
async fn watcher_relists_after_compaction() {
    let sim = common::start(Seed::Demo).await;
    let client = common::kube_client(&sim).await;
    let http = Http::new(&sim);
    let api = Api::<Pod>::all(client.clone());
    let mut watcher = Watcher::spawn(api.clone(), watcher::Config::default());

    let mut store: BTreeMap<String, String> = watcher.initial_list().await.iter().map(|p| (key(p), rv(p))).collect();
    assert_eq!(store.keys().cloned().collect::<Vec<_>>(), common::all_pods(&sim));

    // A change the watcher sees live, then the compaction. The pod is one no ReplicaSet owns,
    // so nothing replaces it.
    let unowned = "redis-0";
    Api::<Pod>::namespaced(client, "demo").delete(unowned, &Default::default()).await.expect("delete a pod");
    match watcher.next().await {
        watcher::Event::Delete(pod) => assert_eq!(pod.name_any(), unowned),
        other => panic!("expected the live delete, got {other:?}"),
    }
    store.remove(&format!("demo/{unowned}"));
    http.hook("/_sim/compact").await;

    // kube-rs surfaces the in-stream 410, then relists: Init, the current objects, InitDone.
    match watcher.next_item().await {
        Err(watcher::Error::WatchError(status)) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired"), "{status:?}"),
        other => panic!("expected the watch's 410 Expired, got {other:?}"),
    }
    let relisted: BTreeMap<String, String> = watcher.initial_list().await.iter().map(|p| (key(p), rv(p))).collect();
    let list = api.list(&ListParams::default()).await.expect("list");
    let expected: BTreeMap<String, String> = list.items.iter().map(|p| (key(p), rv(p))).collect();
    assert_eq!(relisted, expected, "the watcher's view after the relist equals the list");
    assert_eq!(relisted, store, "nothing changed besides the compaction");
    sim.shutdown().await;
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn rv(pod: &Pod) -> String {
    pod.resource_version().unwrap_or_default()
}

/// `watches/close` ends every open watch cleanly: the watcher resumes from its last
/// resourceVersion without relisting, and still sees changes.
#[tokio::test]
async fn watcher_resumes_without_relist_after_watches_close() {
    let sim = common::start(Seed::Demo).await;
    let client = common::kube_client(&sim).await;
    let http = Http::new(&sim);
    let api = Api::<ConfigMap>::namespaced(client, "demo");
    let mut watcher = Watcher::spawn(api.clone(), watcher::Config::default());
    watcher.initial_list().await;
    let before = http.stats_when("the watch to open", |s| s["openWatches"] == 1).await;

    let closed = http.hook("/_sim/watches/close").await;
    assert_eq!(closed["closed"], 1, "{closed}");
    // The watcher comes back with a new watch request, and no list.
    let watch_requests = before["watchRequests"].as_u64().expect("a counter");
    http.stats_when("the watcher to watch again", |s| s["watchRequests"].as_u64() > Some(watch_requests) && s["openWatches"] == 1).await;

    api.create(&PostParams::default(), &config_map("after-close")).await.expect("create");
    match watcher.next().await {
        watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), "after-close"),
        other => panic!("expected the new ConfigMap and no relist (Init), got {other:?}"),
    }
    let after = http.stats().await;
    assert_eq!(after["listRequests"], before["listRequests"], "no relist after a clean close");
    sim.shutdown().await;
}
