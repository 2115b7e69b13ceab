//! A client resuming on another proxy replica (DESIGN.md "Scaling out", `docs/PROTOCOL.md` §4):
//! the replica has none of the subscription's history, yet the client gets no `reset` and no
//! full snapshot, only what changed while it was away, whether or not the collection is still
//! changing; and its cache ends equal to the simulator's list. A client that does not ask for
//! an inventory (`"resume":"inventory"`) still ends right, the way it did before.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, View, fast_config};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig, list, same_objects, sim_client};
use kubemux_protocol::client::{ClientConfig, ConnectionState};
use kubemux_protocol::frames::{EventType, WatchQuery};
use kubemux_proxy::ProxySettings;
use kubemux_testkit::http::metric;
use kubemux_testkit::sim::revisions_pass;
use kubemux_testkit::wait::DEADLINE;
use serde_json::json;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SELECTOR: &str = "set=resume";
const PODS: &str = "/api/v1/namespaces/demo/pods";

fn settings(port: u16) -> ProxySettings {
    ProxySettings { listen: format!("127.0.0.1:{port}").parse().unwrap(), ..ProxySettings::default() }
}

fn selected() -> Option<WatchQuery> {
    Some(WatchQuery { label_selector: Some(SELECTOR.into()), field_selector: None })
}

/// A client of the core as it was before the `inventory` frame.
fn old_style(seed: u64) -> ClientConfig {
    ClientConfig { inventory_resume: false, ..fast_config(seed) }
}

fn configmap(name: &str, labelled: bool, value: &str) -> ConfigMap {
    let labels = if labelled { json!({"set": "resume"}) } else { json!({}) };
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"value": value}})).unwrap()
}

/// One sample of a proxy's `/metrics`.
async fn sample(proxy: &ProxyProcess, series: &str) -> f64 {
    metric(&kubemux_testkit::http::get(&format!("{}/metrics", proxy.http_url())).await.body, series)
}

async fn resumes(proxy: &ProxyProcess, outcome: &str) -> f64 {
    sample(proxy, &format!("kubemux_resumes_total{{outcome=\"{outcome}\"}}")).await
}

/// Waits until the client no longer has an open connection (its proxy was killed).
async fn away(client: &NativeClient, opens: usize) {
    client.wait_for(DEADLINE, "the client to notice its proxy is gone", |v| v.opens() == opens && v.states.last() != Some(&ConnectionState::Open)).await.unwrap();
}

/// Waits until the client's cache of `id` equals `truth`, object by object.
async fn converged(client: &NativeClient, id: &str, truth: &std::collections::BTreeMap<(String, String), serde_json::Value>) -> View {
    let cache = |view: &View| view.caches.get(id).cloned().unwrap_or_default();
    match client.wait_for(DEADLINE, "the cache to equal the simulator's list", |view| same_objects(&cache(view), truth).is_ok()).await {
        Ok(view) => view,
        Err(timeout) => panic!("{timeout}; {id} never converged: {}", same_objects(&cache(&client.view()), truth).unwrap_err()),
    }
}

fn names(events: &[(EventType, (String, String))]) -> BTreeSet<(&'static str, String)> {
    events.iter().map(|(event_type, (_, name))| (event_type.as_str(), name.clone())).collect()
}

/// A quiet collection of 40 objects: while the client is away from replica A (killed), 5 of
/// them are deleted, 5 modified and 3 created (straight in the simulator), then nothing
/// changes. Replica B, already serving the collection to someone else, started its history
/// after the client's version. The client resumes on B: no `reset`, exactly the 13 changes
/// reach it (the new objects as `ADDED`, the deleted ones as `DELETED`), its `synced` arrives
/// with no upstream request, and its cache equals the simulator's list. A client without the
/// opt-in, resumed on B after it, gets a correct cache too, without an inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_collection_resumes_on_another_replica_with_only_what_changed() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let maps: Api<ConfigMap> = Api::namespaced(api.clone(), "default");
    for i in 0..40 {
        maps.create(&PostParams::default(), &configmap(&format!("cm-{i:02}"), true, "0")).await.unwrap();
    }
    let config = kubeconfig(&[("sim", &sim.url(), None)]);
    let a = ProxyProcess::start(settings(0), config.clone());
    let b = ProxyProcess::start(settings(0), config);

    let client = NativeClient::connect(&a.mux_url(), fast_config(1));
    let old = NativeClient::connect(&a.mux_url(), old_style(2));
    for c in [&client, &old] {
        c.watch("cm", "sim", CONFIGMAPS, selected()).await.unwrap();
        c.wait_for(DEADLINE, "the first snapshot", |v| v.synced.get("cm") == Some(&1) && v.caches.get("cm").is_some_and(|c| c.len() == 40)).await.unwrap();
    }
    // The simulator's revision moves on outside the selection, so B's list is at a version the
    // clients never saw: B's history does not reach them.
    maps.create(&PostParams::default(), &configmap("unselected", false, "0")).await.unwrap();
    let observer = NativeClient::connect(&b.mux_url(), fast_config(3));
    observer.watch("cm", "sim", CONFIGMAPS, selected()).await.unwrap();
    observer.wait_for(DEADLINE, "B serving the collection", |v| v.synced.contains_key("cm")).await.unwrap();

    a.kill();
    away(&client, 1).await;
    away(&old, 1).await;
    for i in 0..5 {
        maps.delete(&format!("cm-{i:02}"), &DeleteParams::default()).await.unwrap();
    }
    for i in 10..15 {
        maps.patch(&format!("cm-{i:02}"), &PatchParams::default(), &Patch::Merge(json!({"data": {"value": "changed"}}))).await.unwrap();
    }
    for i in 0..3 {
        maps.create(&PostParams::default(), &configmap(&format!("cm-new-{i}"), true, "0")).await.unwrap();
    }
    let truth = list(&api, &format!("{CONFIGMAPS}?labelSelector={SELECTOR}")).await;
    assert_eq!(truth.len(), 38);
    // B's store is at the end of the changes (its observer has them all); from here on nothing
    // changes.
    converged(&observer, "cm", &truth).await;
    let stats = hook(&api, "GET", "/_sim/stats").await;

    let before = client.view().received.get("cm").map_or(0, Vec::len);
    client.retarget(&b.mux_url());
    let view = client.wait_for(DEADLINE, "the resume's synced on B", |v| v.opens() == 2 && v.synced.get("cm") == Some(&2)).await.unwrap();
    assert_eq!(view.resets.get("cm"), None, "no reset on another replica");
    let expected: BTreeSet<(&str, String)> =
        (0..5).map(|i| ("DELETED", format!("cm-{i:02}"))).chain((10..15).map(|i| ("MODIFIED", format!("cm-{i:02}")))).chain((0..3).map(|i| ("ADDED", format!("cm-new-{i}")))).collect();
    let resumed = &view.received["cm"][before..];
    assert_eq!((resumed.len(), names(resumed)), (13, expected), "only the changed objects and the drops, each once");
    same_objects(&view.caches["cm"], &truth).unwrap_or_else(|difference| panic!("the cache at the resume's synced: {difference}"));
    assert_eq!(resumes(&b, "inventory").await, 1.0);
    let after = hook(&api, "GET", "/_sim/stats").await;
    assert_eq!((&after["listRequests"], &after["watchRequests"]), (&stats["listRequests"], &stats["watchRequests"]), "B answered from its store, asking the simulator nothing");

    // The client of before: right too, by catch-up or reset, never an inventory.
    old.retarget(&b.mux_url());
    old.wait_for(DEADLINE, "the old-style client's synced on B", |v| v.opens() == 2 && v.synced.get("cm") >= Some(&2)).await.unwrap();
    converged(&old, "cm", &truth).await;
    assert_eq!(resumes(&b, "inventory").await, 1.0, "no inventory for a client that did not ask");
    assert_eq!(resumes(&b, "catch_up").await + resumes(&b, "reset").await, 1.0);
}

/// Under churn (50 changes a second on the pods), a client moved between two replicas three
/// times, each kill followed by changes while it is away and each replica fresh when it comes
/// back (its history starts after the client's version): never a `reset`, every resume
/// `synced`, and once churn stops the cache equals the simulator's list. An old-style client
/// moved alongside ends right as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_every_move_to_a_fresh_replica_resumes_without_a_reset() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 50.0, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let config = kubeconfig(&[("sim", &sim.url(), None)]);
    let mut current = ProxyProcess::start(settings(0), config.clone());
    let client = NativeClient::connect(&current.mux_url(), fast_config(4));
    let old = NativeClient::connect(&current.mux_url(), old_style(5));
    for c in [&client, &old] {
        c.watch("pods", "sim", PODS, None).await.unwrap();
        c.wait_for(DEADLINE, "the first snapshot", |v| v.synced.contains_key("pods")).await.unwrap();
    }
    let mut inventories = 0.0;
    for round in 1..=3 {
        current.kill();
        away(&client, round).await;
        away(&old, round).await;
        revisions_pass(&sim, 10, DEADLINE).await;
        let next = ProxyProcess::start(settings(0), config.clone());
        client.retarget(&next.mux_url());
        client.wait_for(DEADLINE, "the resume's synced on the next replica", |v| v.opens() == round + 1 && v.synced["pods"] > round).await.unwrap();
        inventories += resumes(&next, "inventory").await;
        old.retarget(&next.mux_url());
        old.wait_for(DEADLINE, "the old-style client's synced on the next replica", |v| v.opens() == round + 1 && v.synced["pods"] > round).await.unwrap();
        current = next;
    }
    hook(&api, "POST", "/_sim/churn?perSecond=0").await;
    let truth = list(&api, PODS).await;
    let view = converged(&client, "pods", &truth).await;
    assert_eq!(view.resets.get("pods"), None, "no reset on any move: {:?}", view.resets);
    assert_eq!(inventories, 3.0, "each fresh replica answered from its store");
    converged(&old, "pods", &truth).await;
}

/// A client ahead of the replica it resumes on: replica B's upstream watch is held back (the
/// simulator stalls every watch) while the collection changes, and the client, served by a
/// fresh replica A whose list saw the changes, is consistent at a version B's store has not
/// reached. Moved to B, it gets `synced` at its own version at once (no `reset`, no event, no
/// upstream request); once B's watch catches up, none of the changes it already holds reaches
/// it again, and the next change does. The same for a client without the opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_the_replica_is_synced_at_once_and_sent_nothing_it_holds() {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap();
    let api = sim_client(&sim).await;
    let maps: Api<ConfigMap> = Api::namespaced(api.clone(), "default");
    for i in 0..10 {
        maps.create(&PostParams::default(), &configmap(&format!("cm-{i:02}"), true, "0")).await.unwrap();
    }
    let config = kubeconfig(&[("sim", &sim.url(), None)]);
    let b = ProxyProcess::start(settings(0), config.clone());
    let observer = NativeClient::connect(&b.mux_url(), fast_config(6));
    observer.watch("cm", "sim", CONFIGMAPS, selected()).await.unwrap();
    observer.wait_for(DEADLINE, "B serving the collection", |v| v.synced.contains_key("cm")).await.unwrap();

    // From here B's watch delivers nothing: its store stays where it is.
    hook(&api, "POST", "/_sim/watches/stall?seconds=600").await;
    for i in 0..3 {
        maps.delete(&format!("cm-{i:02}"), &DeleteParams::default()).await.unwrap();
    }
    for i in 5..8 {
        maps.patch(&format!("cm-{i:02}"), &PatchParams::default(), &Patch::Merge(json!({"data": {"value": "changed"}}))).await.unwrap();
    }
    maps.create(&PostParams::default(), &configmap("cm-new", true, "0")).await.unwrap();
    let truth = list(&api, &format!("{CONFIGMAPS}?labelSelector={SELECTOR}")).await;

    // A lists after the changes: its clients hold the newest state.
    let a = ProxyProcess::start(settings(0), config);
    let client = NativeClient::connect(&a.mux_url(), fast_config(7));
    let old = NativeClient::connect(&a.mux_url(), old_style(8));
    for c in [&client, &old] {
        c.watch("cm", "sim", CONFIGMAPS, selected()).await.unwrap();
        converged(c, "cm", &truth).await;
    }
    a.kill();
    away(&client, 1).await;
    away(&old, 1).await;
    let stats = hook(&api, "GET", "/_sim/stats").await;
    let before: Vec<usize> = [&client, &old].iter().map(|c| c.view().received.get("cm").map_or(0, Vec::len)).collect();
    for (n, c) in [&client, &old].into_iter().enumerate() {
        c.retarget(&b.mux_url());
        let view = c.wait_for(DEADLINE, "the resume's synced on B", |v| v.opens() == 2 && v.synced.get("cm") == Some(&2)).await.unwrap();
        assert_eq!(view.resets.get("cm"), None, "no reset for a client ahead of the replica");
        assert_eq!(view.received["cm"].len(), before[n], "nothing sent: the client holds it all");
        same_objects(&view.caches["cm"], &truth).unwrap_or_else(|difference| panic!("the cache at the resume's synced: {difference}"));
    }
    assert_eq!(resumes(&b, "ahead").await, 2.0);
    assert_eq!(resumes(&b, "reset").await, 0.0);
    let after = hook(&api, "GET", "/_sim/stats").await;
    assert_eq!((&after["listRequests"], &after["watchRequests"]), (&stats["listRequests"], &stats["watchRequests"]), "B asked the simulator nothing");

    // B's watch catches up (its stalled watch is closed and resumed from its version): the
    // observer gets the changes, the clients ahead do not get them again.
    hook(&api, "POST", "/_sim/watches/stall?seconds=0").await;
    hook(&api, "POST", "/_sim/watches/close").await;
    converged(&observer, "cm", &truth).await;
    maps.create(&PostParams::default(), &configmap("cm-later", true, "0")).await.unwrap();
    let truth = list(&api, &format!("{CONFIGMAPS}?labelSelector={SELECTOR}")).await;
    for (n, c) in [&client, &old].into_iter().enumerate() {
        let view = converged(c, "cm", &truth).await;
        assert_eq!(&view.received["cm"][before[n]..], &[(EventType::Added, ("default".to_owned(), "cm-later".to_owned()))], "only the change after the client's version");
        assert_eq!(view.resets.get("cm"), None);
    }
}
