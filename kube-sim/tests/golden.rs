//! Golden tests: the exact JSON the simulator puts on the wire, compared as whole
//! `serde_json::Value`s. Volatile fields (uid, timestamps, resourceVersions that are not known
//! up front) are checked for presence and then nulled out explicitly, so every other field
//! must match exactly: nothing missing, nothing extra.

mod common;

use std::time::Duration;

use axum::http::Method;
use kube_sim::{Seed, SimConfig, User};
use serde_json::{Value, json};

use common::Http;

/// Replaces the value at each JSON pointer with `null`, after checking it is a non-empty string.
#[track_caller]
fn null_out(value: &mut Value, pointers: &[&str]) {
    for pointer in pointers {
        let field = value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} is missing"));
        assert!(field.as_str().is_some_and(|s| !s.is_empty()), "{pointer} should be a non-empty string, is {field}");
        *field = Value::Null;
    }
}

/// The body the simulator must send, exactly.
#[track_caller]
fn check(actual: &Value, expected: &Value) {
    assert_eq!(actual, expected, "\nactual:   {actual}\nexpected: {expected}");
}

#[tokio::test]
async fn watch_event_line() {
    let sim = common::start(Seed::Empty).await;
    let http = Http::new(&sim);
    let (rv, _) = http.list("/api/v1/namespaces/default/configmaps").await;
    let (status, mut lines) = http.stream(&format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}")).await;
    assert_eq!(status, 200);

    let created = http.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "golden", "labels": {"a": "b"}}, "data": {"k": "v"}})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();

    let line = lines.next_line().await.expect("one event line");
    assert!(!line.contains('\n') && line.starts_with("{\"type\":\"ADDED\""), "one compact JSON document per line: {line}");
    let mut event: Value = serde_json::from_str(&line).expect("JSON");
    // The event carries exactly the created object (same resourceVersion, uid, timestamps).
    assert_eq!(event["object"], created, "the ADDED object is the object the create returned");
    null_out(&mut event, &["/object/metadata/uid", "/object/metadata/creationTimestamp", "/object/metadata/resourceVersion"]);
    check(
        &event,
        &json!({
            "type": "ADDED",
            "object": {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {
                    "name": "golden",
                    "namespace": "default",
                    "uid": null,
                    "resourceVersion": null,
                    "creationTimestamp": null,
                    "labels": {"a": "b"},
                },
                "data": {"k": "v"},
            },
        }),
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bookmark() {
    let sim = common::start_with(SimConfig { seed: Seed::Demo, bookmark_interval: Duration::from_millis(200), ..SimConfig::default() }).await;
    let http = Http::new(&sim);
    let (rv, _) = http.list("/api/v1/namespaces/demo/pods").await;
    let (status, mut lines) = http.stream(&format!("/api/v1/namespaces/demo/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}")).await;
    assert_eq!(status, 200);
    // Nothing changed since the list, so the bookmark's resourceVersion is the list's.
    check(&lines.next_event().await, &json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}}}));

    // Without allowWatchBookmarks there are none: the first line is the next real change.
    let (_, mut plain) = http.stream(&format!("/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={rv}")).await;
    // Outlive a bookmark interval (the other watch's second bookmark proves it), then make a
    // change: it must be the first line here.
    assert_eq!(lines.next_event().await["type"], "BOOKMARK");
    http.post("/api/v1/namespaces/demo/configmaps", &json!({"metadata": {"name": "after-bookmarks"}})).await.ok();
    let event = plain.next_event().await;
    assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("after-bookmarks")), "{event}");
    sim.shutdown().await;
}

/// Reference §7.6 G2: HTTP 200, exactly one ERROR event with the Expired Status, end of stream.
#[tokio::test]
async fn expired_watch_is_an_in_stream_410() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let (old, _) = http.list("/api/v1/pods").await;
    let compacted = http.hook("/_sim/compact").await;
    let floor = compacted["resourceVersion"].as_str().expect("the compaction's resourceVersion");

    let (status, mut lines) = http.stream(&format!("/api/v1/pods?watch=true&resourceVersion={old}")).await;
    assert_eq!(status, 200, "a watch with valid parameters is accepted, and fails inside the stream");
    check(
        &lines.next_event().await,
        &json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {old} ({floor})"), "reason": "Expired", "code": 410,
        }}),
    );
    lines.assert_ends().await;
    sim.shutdown().await;
}

/// Reference §7.8: the initial ADDED events, then exactly one bookmark annotated
/// `k8s.io/initial-events-end`, at the snapshot's resourceVersion; then the watch goes on.
#[tokio::test]
async fn send_initial_events_ends_with_the_annotated_bookmark() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let (rv, names) = http.list("/api/v1/namespaces/default/pods").await;
    let (status, mut lines) = http
        .stream("/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        .await;
    assert_eq!(status, 200);
    let mut added = Vec::new();
    for _ in &names {
        let event = lines.next_event().await;
        assert_eq!(event["type"], "ADDED", "{event}");
        added.push(event["object"]["metadata"]["name"].as_str().expect("a name").to_owned());
    }
    assert_eq!(added, names, "one ADDED per object, in list order");
    check(
        &lines.next_event().await,
        &json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {
            "resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}}}}),
    );
    http.send(Method::DELETE, "/api/v1/namespaces/default/pods/toolbox", None, Vec::new()).await.ok();
    let event = lines.next_event().await;
    assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some("DELETED"), Some("toolbox")), "{event}");
    sim.shutdown().await;
}

#[tokio::test]
async fn not_found_status() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let reply = http.get("/api/v1/namespaces/demo/pods/nginx").await;
    check(
        &reply.status(404, "NotFound"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"nginx\" not found", "reason": "NotFound", "details": {"name": "nginx", "kind": "pods"}, "code": 404}),
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn conflict_statuses() {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    let path = "/api/v1/namespaces/demo/configmaps";
    let body = json!({"metadata": {"name": "twice"}, "data": {"v": "1"}});
    let first = http.post(path, &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let stale_rv = first.json()["metadata"]["resourceVersion"].clone();

    check(
        &http.post(path, &body).await.status(409, "AlreadyExists"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "configmaps \"twice\" already exists", "reason": "AlreadyExists",
                "details": {"name": "twice", "kind": "configmaps"}, "code": 409}),
    );

    // An update from a stale resourceVersion.
    let put = |data: &str| json!({"metadata": {"name": "twice", "resourceVersion": stale_rv}, "data": {"v": data}});
    http.json(Method::PUT, &format!("{path}/twice"), &put("2")).await.ok();
    check(
        &http.json(Method::PUT, &format!("{path}/twice"), &put("3")).await.status(409, "Conflict"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Operation cannot be fulfilled on configmaps \"twice\": the object has been modified; please apply your changes to the latest version and try again",
                "reason": "Conflict", "details": {"name": "twice", "kind": "configmaps"}, "code": 409}),
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unauthorized_and_forbidden_statuses() {
    let users = vec![User::parse("alice:alice-token:demo").expect("a user"), User::parse("root:root-token:*").expect("a user")];
    let sim = common::start_with(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await;

    for http in [Http::new(&sim), Http::with_token(&sim, "wrong-token")] {
        check(
            &http.get("/api/v1/namespaces/demo/pods").await.status(401, "Unauthorized"),
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        );
    }

    let alice = Http::with_token(&sim, "alice-token");
    alice.get("/api/v1/namespaces/demo/pods").await.ok();
    // StatusDetails.group is `omitempty`: the core group ("") is not sent.
    check(
        &alice.get("/api/v1/namespaces/default/pods").await.status(403, "Forbidden"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
                "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}),
    );
    Http::with_token(&sim, "root-token").get("/api/v1/namespaces/default/pods").await.ok();
    sim.shutdown().await;
}
