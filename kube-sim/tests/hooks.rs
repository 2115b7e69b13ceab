//! The `/_sim` test hooks, observed the way a client sees their effect: watches that end,
//! watches that stall, injected faults, restarted pods, and the counters in `/_sim/stats`.
//! (The kube watcher resuming after `watches/close` is in `kube_client.rs`.)

mod common;

use std::time::Duration;

use axum::http::Method;
use kube_sim::Seed;
use serde_json::json;
use tokio::time::Instant;

use common::Http;

#[tokio::test]
async fn watches_close_ends_open_watches_cleanly() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let (rv, _) = http.list("/api/v1/pods").await;
    let (_, mut pods) = http.stream(&format!("/api/v1/pods?watch=true&resourceVersion={rv}")).await;
    let (_, mut config_maps) = http.stream(&format!("/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={rv}")).await;
    http.stats_when("both watches to open", |s| s["openWatches"] == 2).await;

    assert_eq!(http.hook("/_sim/watches/close").await, json!({"closed": 2}));
    // A clean end of the chunked body, with no ERROR or other terminal event (reference §7.2 W4).
    pods.assert_ends().await;
    config_maps.assert_ends().await;
    http.stats_when("the open-watch count to drop", |s| s["openWatches"] == 0).await;
    // New watches work, from where the old ones left off.
    let (status, mut again) = http.stream(&format!("/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={rv}")).await;
    assert_eq!(status, 200);
    http.post("/api/v1/namespaces/demo/configmaps", &json!({"metadata": {"name": "after-close"}})).await.ok();
    assert_eq!(again.next_event().await["object"]["metadata"]["name"], "after-close");
    sim.shutdown().await;
}

#[tokio::test]
async fn watches_stall_delays_delivery() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let (rv, _) = http.list("/api/v1/namespaces/demo/configmaps").await;
    let (_, mut lines) = http.stream(&format!("/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={rv}")).await;
    // Undelayed first: the event arrives at once.
    http.post("/api/v1/namespaces/demo/configmaps", &json!({"metadata": {"name": "before-stall"}})).await.ok();
    assert_eq!(lines.next_event().await["object"]["metadata"]["name"], "before-stall");

    let stall = Duration::from_millis(1500);
    let started = Instant::now();
    assert_eq!(http.hook(&format!("/_sim/watches/stall?seconds={}", stall.as_secs_f64())).await["stalledForSeconds"], 1.5);
    http.post("/api/v1/namespaces/demo/configmaps", &json!({"metadata": {"name": "during-stall"}})).await.ok();
    let event = lines.next_event().await;
    let waited = started.elapsed();
    assert_eq!(event["object"]["metadata"]["name"], "during-stall", "nothing is lost, only delayed: {event}");
    assert!(waited >= stall - Duration::from_millis(50), "delivered after {waited:?}, before the {stall:?} stall ended");

    // A bad stall request is a 400 Status, not a stall.
    http.send(Method::POST, "/_sim/watches/stall?seconds=-1", None, Vec::new()).await.status(400, "BadRequest");
    http.send(Method::POST, "/_sim/watches/stall", None, Vec::new()).await.status(400, "BadRequest");
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_fail_the_next_requests_under_the_prefix() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let fault = json!({"pathPrefix": "/api/v1/namespaces/demo/pods", "status": 503, "count": 2});
    assert_eq!(http.post("/_sim/faults", &fault).await.ok(), fault);
    assert_eq!(http.get("/_sim/faults").await.ok(), json!([fault]));

    // Other paths are untouched and do not use up the fault.
    http.get("/api/v1/namespaces/default/pods").await.ok();
    for _ in 0..2 {
        let body = http.get("/api/v1/namespaces/demo/pods/redis-0").await.status(503, "ServiceUnavailable");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // Used up: the third request succeeds.
    assert_eq!(http.get("/api/v1/namespaces/demo/pods/redis-0").await.ok()["metadata"]["name"], "redis-0");
    assert_eq!(http.get("/_sim/faults").await.ok(), json!([]));

    // Faults apply to watches as well, and can be cleared.
    http.post("/_sim/faults", &json!({"pathPrefix": "/api/v1/pods", "status": 429, "count": 5})).await.ok();
    http.get("/api/v1/pods?watch=true").await.status(429, "TooManyRequests");
    http.send(Method::DELETE, "/_sim/faults", None, Vec::new()).await.ok();
    http.list("/api/v1/pods").await;

    // A malformed fault is refused.
    http.post("/_sim/faults", &json!({"pathPrefix": "/api", "status": 200, "count": 1})).await.status(400, "BadRequest");
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_replaces_a_pod_with_a_new_name_and_the_same_labels() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let old_name = common::pods_of(&sim, "demo", "web")[0].clone();
    let old = http.get(&format!("/api/v1/namespaces/demo/pods/{old_name}")).await.ok();
    let (rv, _) = http.list("/api/v1/namespaces/demo/pods").await;
    let (_, mut lines) = http.stream(&format!("/api/v1/namespaces/demo/pods?watch=true&resourceVersion={rv}")).await;

    let new = http.hook(&format!("/_sim/pods/demo/{old_name}/restart")).await;
    let new_name = new["metadata"]["name"].as_str().expect("a name").to_owned();
    assert_ne!(new_name, old_name);
    let prefix = old_name.rsplit_once('-').expect("a generated name").0;
    assert!(new_name.starts_with(&format!("{prefix}-")), "{new_name} keeps the ReplicaSet prefix {prefix}-");
    assert_eq!(new["metadata"]["labels"], old["metadata"]["labels"]);
    assert_ne!(new["metadata"]["uid"], old["metadata"]["uid"]);

    // Watchers see the old pod go and the new one come.
    let deleted = lines.next_event().await;
    assert_eq!((deleted["type"].as_str(), deleted["object"]["metadata"]["name"].as_str()), (Some("DELETED"), Some(old_name.as_str())));
    let added = lines.until(|e| e["type"] == "ADDED").await;
    assert_eq!(added["object"]["metadata"]["name"], new_name.as_str());

    http.get(&format!("/api/v1/namespaces/demo/pods/{old_name}")).await.status(404, "NotFound");
    let fetched = http.get(&format!("/api/v1/namespaces/demo/pods/{new_name}")).await.ok();
    assert_eq!(fetched["metadata"]["labels"], old["metadata"]["labels"]);
    let selected = http.get("/api/v1/namespaces/demo/pods?labelSelector=app%3Dweb").await.ok();
    assert_eq!(selected["items"].as_array().map(Vec::len), Some(3), "still three web pods");

    http.send(Method::POST, "/_sim/pods/demo/ghost/restart", None, Vec::new()).await.status(404, "NotFound");
    sim.shutdown().await;
}

/// `readyAfterSeconds`: the replacement is born not Ready and turns Ready later; no watcher
/// ever sees it Ready before that (a forward or endpoints controller would pick it), whether
/// a ReplicaSet owns it or not, and with a grace period or without.
#[tokio::test]
async fn restart_ready_after_holds_the_replacement_not_ready_from_its_first_event() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let ready = |pod: &serde_json::Value| pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
    let owned = common::pods_of(&sim, "demo", "web")[0].clone();
    let (rv, _) = http.list("/api/v1/namespaces/demo/pods").await;
    let (_, mut lines) = http.stream(&format!("/api/v1/namespaces/demo/pods?watch=true&resourceVersion={rv}")).await;
    for query in ["readyAfterSeconds=0.5", "readyAfterSeconds=0.5&gracePeriodSeconds=1"] {
        let old_name = if query.contains("grace") { common::pods_of(&sim, "demo", "web")[1].clone() } else { owned.clone() };
        let new = http.hook(&format!("/_sim/pods/demo/{old_name}/restart?{query}")).await;
        assert!(!ready(&new), "{query}: the hook's answer is not Ready: {new}");
        let new_name = new["metadata"]["name"].as_str().expect("a name").to_owned();
        let first = lines.until(|e| e["object"]["metadata"]["name"] == new_name.as_str()).await;
        assert_eq!(first["type"], "ADDED", "{query}: {first}");
        assert!(!ready(&first["object"]), "{query}: the replacement's first event is not Ready: {first}");
        let next = lines.until(|e| e["object"]["metadata"]["name"] == new_name.as_str()).await;
        assert_eq!(next["type"], "MODIFIED", "{query}: {next}");
        assert!(ready(&next["object"]), "{query}: its next event makes it Ready: {next}");
    }
    // The ReplicaSet made no pod beside the replacements.
    let live = |pods: &serde_json::Value| pods["items"].as_array().into_iter().flatten().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count();
    let selected = http.get("/api/v1/namespaces/demo/pods?labelSelector=app%3Dweb").await.ok();
    assert_eq!(live(&selected), 3, "{selected}");
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_count_watches_and_lists() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let before = http.stats().await;
    assert_eq!(before["openWatches"], 0);

    http.list("/api/v1/pods").await;
    http.list("/api/v1/namespaces/demo/configmaps").await;
    let (_, watch) = http.stream("/api/v1/namespaces/demo/pods?watch=true").await;
    let during = http.stats_when("the watch to count as open", |s| s["openWatches"] == 1).await;
    let count = |stats: &serde_json::Value, key: &str| stats[key].as_u64().unwrap_or_else(|| panic!("{key} in {stats}"));
    assert_eq!(count(&during, "listRequests"), count(&before, "listRequests") + 2);
    assert_eq!(count(&during, "watchRequests"), count(&before, "watchRequests") + 1);

    // The client going away closes the watch.
    drop(watch);
    let after = http.stats_when("the watch to count as closed", |s| s["openWatches"] == 0).await;
    assert_eq!(count(&after, "watchRequests"), count(&during, "watchRequests"));
    sim.shutdown().await;
}

/// Churn writes into objects users own. A ConfigMap whose `data` a user patched into a string,
/// and pods whose annotations are not a map, used to panic the churn task (indexing into a
/// string), which then stopped for good with nothing said. Churn now leaves such fields alone
/// and carries on.
#[tokio::test]
async fn churn_survives_objects_users_made_odd() {
    let sim = common::start_with(kube_sim::SimConfig { seed: Seed::Demo, churn_per_second: 0.0, ..kube_sim::SimConfig::default() }).await;
    let http = Http::new(&sim);
    let merge = Some("application/merge-patch+json");
    for namespace in ["default", "demo", "kube-system"] {
        let (_, maps) = http.list(&format!("/api/v1/namespaces/{namespace}/configmaps")).await;
        for map in maps.iter().filter(|m| *m != "kube-root-ca.crt") {
            let path = format!("/api/v1/namespaces/{namespace}/configmaps/{map}");
            let reply = http.send(Method::PATCH, &path, merge, br#"{"data":"x"}"#.to_vec()).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        }
        let (_, pods) = http.list(&format!("/api/v1/namespaces/{namespace}/pods")).await;
        for pod in pods {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}");
            http.send(Method::PATCH, &path, merge, br#"{"metadata":{"annotations":"x"}}"#.to_vec()).await;
        }
    }
    // Fast churn: a panic would come within a few dozen steps; 200 changes must still pass.
    http.hook("/_sim/churn?perSecond=400").await;
    kubemux_testkit::sim::revisions_pass(&sim, 200, Duration::from_secs(20)).await;
    sim.shutdown().await;
}
