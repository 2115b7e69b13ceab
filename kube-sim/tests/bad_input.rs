//! Bad input gets the `Status` a real API server sends (reference `kube-api-semantics.md`
//! §6.4, §7.3, §9b), never a panic, a hung connection or a dead simulator: after each bad
//! request a good one on the same simulator succeeds.

mod common;

use axum::http::Method;
use kube_sim::{Seed, Sim};
use serde_json::Value;

use common::Http;

/// A request that must succeed, proving the simulator lives on after the bad one.
async fn still_serving(http: &Http) {
    let (_, pods) = http.list("/api/v1/namespaces/demo/pods").await;
    assert!(!pods.is_empty(), "the simulator still serves lists");
}

/// Runs one bad request, checks its Status, then a good one.
async fn expect_status(http: &Http, reply: common::Reply, code: u16, reason: &str, message_contains: &str) -> Value {
    let body = reply.status(code, reason);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_contains), "message {message:?} should contain {message_contains:?}");
    still_serving(http).await;
    body
}

async fn demo() -> (Sim, Http) {
    let sim = common::start(Seed::Demo).await;
    let http = Http::new(&sim);
    (sim, http)
}

#[tokio::test]
async fn malformed_json_body_is_400() {
    let (sim, http) = demo().await;
    let path = "/api/v1/namespaces/demo/configmaps";
    // The API server's words (apiserver `transformDecodeError`, apimachinery's JSON serializer):
    // what went wrong, then the body's first 30 bytes, as text when it starts with `{` and in
    // hex otherwise. Go's own texts where serde's differ: a cut-off body, a non-object.
    let unrecognized = "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: ";
    let cases: [(&[u8], String); 3] = [
        (b"{\"metadata\": {\"name\": ", format!("{unrecognized}unexpected end of JSON input ({{\"metadata\": {{\"name\": )")),
        (b"", format!("{unrecognized}unexpected end of JSON input (<empty>)")),
        // Valid JSON that is not an object.
        (b"[1, 2]", format!("{unrecognized}json: cannot unmarshal array into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }} (5b312c20325d)")),
    ];
    for (body, message) in cases {
        let reply = http.send(Method::POST, path, Some("application/json"), body.to_vec()).await;
        let status = expect_status(&http, reply, 400, "BadRequest", &message).await;
        assert_eq!(status["message"], message);
    }
    // A syntax error: serde's description of it (Go's scanner words it otherwise), and the body.
    let reply = http.send(Method::POST, path, Some("application/json"), b"not json at all".to_vec()).await;
    let status = expect_status(&http, reply, 400, "BadRequest", unrecognized).await;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(unrecognized) && message.ends_with(" (6e6f74206a736f6e20617420616c6c)"), "{message}");
    // Nothing was created by any of them.
    let (_, names) = http.list(path).await;
    assert_eq!(names, ["api-config", "kube-root-ca.crt", "web-config"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_resource_path_is_404() {
    let (sim, http) = demo().await;
    for path in ["/api/v1/widgets", "/api/v1/namespaces/demo/widgets", "/apis/nope.example.com/v1/things", "/api/v1/namespaces/demo/pods/redis-0/nonsense", "/no/such/path"] {
        let reply = http.get(path).await;
        let body = expect_status(&http, reply, 404, "NotFound", "the server could not find the requested resource").await;
        assert_eq!(body["message"], "the server could not find the requested resource", "{path}: {body}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_label_selector_is_400() {
    let (sim, http) = demo().await;
    // apimachinery's `labels.Parse` messages for each.
    let cases = [
        ("app%20in%20(web", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("app%3D%3D%3Dweb", "unable to parse requirement: found '=', expected: identifier"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a%20b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ];
    for (selector, message) in cases {
        let reply = http.get(&format!("/api/v1/pods?labelSelector={selector}")).await;
        let status = expect_status(&http, reply, 400, "BadRequest", message).await;
        assert_eq!(status["message"], message, "{selector}");
        // The same on a watch: rejected before the stream starts.
        let reply = http.get(&format!("/api/v1/pods?watch=true&labelSelector={selector}")).await;
        let status = expect_status(&http, reply, 400, "BadRequest", message).await;
        assert_eq!(status["message"], message, "watch {selector}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_field_selector_label_is_400() {
    let (sim, http) = demo().await;
    let reply = http.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx").await;
    let body = expect_status(&http, reply, 400, "BadRequest", "field label not supported: spec.bogus").await;
    assert_eq!(body["message"], "field label not supported: spec.bogus", "{body}");
    let reply = http.get("/api/v1/namespaces/demo/configmaps?watch=true&fieldSelector=status.phase%3DRunning").await;
    let body = expect_status(&http, reply, 400, "BadRequest", "field label not supported: status.phase").await;
    assert_eq!(body["message"], "field label not supported: status.phase", "{body}");
    // Supported labels work.
    let reply = http.get("/api/v1/pods?fieldSelector=metadata.name%3Dtoolbox").await;
    assert_eq!(common::names(&reply.ok()["items"]), ["toolbox"]);
    sim.shutdown().await;
}

/// Upstream parses resourceVersion with `strconv.ParseUint` and rejects what does not parse,
/// before a list is read or a watch stream is started (reference §7.3).
#[tokio::test]
async fn non_numeric_resource_version_is_400_on_list_and_watch() {
    let (sim, http) = demo().await;
    for query in ["resourceVersion=abc", "resourceVersion=-1", "resourceVersion=12abc"] {
        let reply = http.get(&format!("/api/v1/namespaces/demo/pods?{query}")).await;
        expect_status(&http, reply, 400, "BadRequest", "resource version").await;
        let reply = http.get(&format!("/api/v1/namespaces/demo/pods?watch=true&{query}")).await;
        expect_status(&http, reply, 400, "BadRequest", "resource version").await;
    }
    sim.shutdown().await;
}

/// Exec options are validated before the upgrade: a refused handshake with a Status body.
#[tokio::test]
async fn bad_exec_parameters_are_400() {
    let (sim, http) = demo().await;

    // No stream requested.
    let refused = common::websocket(&sim, "/api/v1/namespaces/default/pods/toolbox/exec?command=sh", "v5.channel.k8s.io").await.expect_err("no streams");
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["reason"], "BadRequest");
    assert_eq!(refused.body["message"], "you must specify at least 1 of stdin, stdout, stderr");
    still_serving(&http).await;

    // A pod with two containers and none named.
    let web = common::pods_of(&sim, "demo", "web")[0].clone();
    let path = format!("/api/v1/namespaces/demo/pods/{web}/exec?command=ls&stdout=true");
    let refused = common::websocket(&sim, &path, "v5.channel.k8s.io").await.expect_err("no container named");
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["kind"], "Status");
    assert_eq!(refused.body["reason"], "BadRequest");
    assert_eq!(refused.body["message"], format!("a container name must be specified for pod {web}, choose one of: [nginx log-shipper]"));
    still_serving(&http).await;

    // A container the pod does not have.
    let refused = common::websocket(&sim, &format!("{path}&container=nope"), "v5.channel.k8s.io").await.expect_err("no such container");
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["message"], format!("container nope is not valid for pod {web}"));
    still_serving(&http).await;

    // An exec into a pod that does not exist.
    let refused = common::websocket(&sim, "/api/v1/namespaces/demo/pods/ghost/exec?command=ls&stdout=true", "v5.channel.k8s.io").await.expect_err("no such pod");
    assert_eq!(refused.status, 404, "{:?}", refused.body);
    assert_eq!(refused.body["reason"], "NotFound");
    still_serving(&http).await;
    sim.shutdown().await;
}

/// A `timeoutSeconds` past what a clock can add is a watch that never times out, not a panic.
#[tokio::test]
async fn huge_watch_timeout_is_served() {
    let (sim, http) = demo().await;
    let (status, mut lines) = http.stream(&format!("/api/v1/namespaces/demo/pods?watch=true&timeoutSeconds={}", u64::MAX)).await;
    assert_eq!(status, 200);
    let event = lines.next_event().await;
    assert_eq!(event["type"], "ADDED", "{event}");
    still_serving(&http).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bodies_kube_sim_cannot_read_are_415_and_reviews_are_create_only() {
    let (sim, http) = demo().await;
    // A Pod whose one field, 111, is none a Pod has: refused rather than stored without it.
    let protobuf = http.send(Method::POST, "/api/v1/namespaces/demo/pods", Some("application/vnd.kubernetes.protobuf"), b"k8s\0\x12\x03\xf8\x06\x01".to_vec()).await;
    expect_status(&http, protobuf, 415, "UnsupportedMediaType", "field 111 of Pod").await;
    let cbor = http.send(Method::PUT, "/api/v1/namespaces/demo/configmaps/web-config", Some("application/cbor"), vec![0xa0]).await;
    expect_status(&http, cbor, 415, "UnsupportedMediaType", "application/cbor").await;

    let review = serde_json::json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                    "spec": {"resourceAttributes": {"namespace": "demo", "verb": "get", "resource": "pods"}}});
    let answered = http.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &review).await;
    assert_eq!(answered.status, 201);
    assert_eq!(answered.json()["status"]["allowed"], true);
    let empty = http.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &serde_json::json!({"spec": {}})).await;
    expect_status(&http, empty, 422, "Invalid", "exactly one of nonResourceAttributes or resourceAttributes").await;
    let listed = http.get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").await;
    expect_status(&http, listed, 405, "MethodNotAllowed", "does not allow this method").await;
    sim.shutdown().await;
}
