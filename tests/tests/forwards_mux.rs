//! The forwards as a `/mux` collection (`docs/PROTOCOL.md` §10), end to end over a real
//! socket: what a browser subscribed to `/apis/kubemux.dev/v1/forwards` sees when a forward
//! comes up, when its pod restarts, when a reload adds and removes forwards, and when it
//! resumes.

mod forwards_support;

use forwards_support::*;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_sim::User;
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::Proxy;
use kubemux_proxy::live::Outcome;
use kubemux_testkit::sim::{hook, sim_client};
use kubemux_testkit::wait::within;
use kubemux_testkit::ws::{Ws, connect};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const FORWARDS: &str = "/apis/kubemux.dev/v1/forwards";

/// A `/mux` socket and every frame it received.
struct Mux {
    ws: Ws,
    frames: Vec<Value>,
}

impl Mux {
    async fn open(proxy: &Proxy) -> Mux {
        Mux::open_as(proxy, &[]).await
    }

    async fn open_as(proxy: &Proxy, headers: &[(&str, &str)]) -> Mux {
        let (ws, _) = connect(proxy.addr(), "/mux", SUBPROTOCOL, headers).await.expect("the /mux upgrade");
        Mux { ws, frames: Vec::new() }
    }

    /// The events of subscription `id` received so far: (type, name).
    fn events(&self, id: &str) -> Vec<(String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        self.frames.iter().filter(|f| f["op"] == "event" && f["id"] == id).map(|f| (text(&f["type"]), text(&f["object"]["metadata"]["name"]))).collect()
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::Text(message.to_string().into())).await.expect("a sent message");
    }

    async fn watch(&mut self, id: &str, path: &str, resource_version: Option<&str>) {
        self.send(json!({"op": "watch", "id": id, "cluster": "sim", "path": path, "resourceVersion": resource_version})).await;
    }

    /// Reads frames until one satisfies `wanted` (returned); fails after 20 s saying what it
    /// waited for and what came.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let start = self.frames.len();
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).expect("JSON frames"),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("the socket ended waiting for {what}: {other:?}"),
                Err(_) => panic!("no {what} within 20 s; frames meanwhile: {:#?}", &self.frames[start..]),
            };
            self.frames.push(frame.clone());
            if wanted(&frame) {
                return frame;
            }
        }
    }
}

/// An event of subscription `id` for forward `name` of type `kind` whose object satisfies
/// `object`.
fn event(frame: &Value, id: &str, kind: &str, name: &str, object: impl Fn(&Value) -> bool) -> bool {
    frame["op"] == "event" && frame["id"] == id && frame["type"] == kind && frame["object"]["metadata"]["name"] == name && object(&frame["object"])
}

/// Reloads (the file watch may have applied the change already).
async fn reload(proxy: &Proxy) {
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged), "{outcome:?}");
}

fn state(object: &Value) -> (&str, &str) {
    (object["status"]["state"].as_str().unwrap_or_default(), object["status"]["pod"].as_str().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_are_watched_live_over_mux_through_restarts_reloads_and_resumes() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let dir = folder("mux", &sim, None);
    let hello = forward("hello", "default", "deployment/hello", "8000", 0);
    write_config(&dir, &hello);
    let proxy = start(&dir).await;
    let mut mux = Mux::open(&proxy).await;
    mux.watch("fw", FORWARDS, None).await;
    mux.until("the snapshot's synced", |f| f["op"] == "synced" && f["id"] == "fw").await;
    // The forward as a Kubernetes-shaped object, Active on its pod.
    // It may have been Active already in the snapshot, or turn Active after it.
    let is_active = |f: &Value| f["op"] == "event" && f["id"] == "fw" && state(&f["object"]).0 == "Active";
    let active = match mux.frames.iter().find(|f| is_active(f)).cloned() {
        Some(frame) => frame,
        None => mux.until("hello Active", is_active).await,
    };
    let object = &active["object"];
    assert_eq!((object["apiVersion"].as_str(), object["kind"].as_str(), object["metadata"]["namespace"].as_str()), (Some("kubemux.dev/v1"), Some("Forward"), Some("default")), "{object}");
    assert_eq!((object["spec"]["cluster"].as_str(), object["spec"]["target"].as_str()), (Some("sim"), Some("deployment/hello")), "{object}");
    let pod = state(object).1.to_owned();
    assert!(pod.starts_with("hello-"), "{object}");
    assert!(object["metadata"]["resourceVersion"].as_str().is_some_and(|v| v.contains('-')), "{object}");

    // The pod restarts, its replacement Ready a second later: Reconnecting, then Active on it.
    let replacement = hook(&api, "POST", &format!("/_sim/pods/default/{pod}/restart?readyAfterSeconds=1")).await;
    let next = replacement["metadata"]["name"].as_str().expect("the replacement's name").to_owned();
    assert_ne!(next, pod);
    let waiting = mux.until("hello Reconnecting", |f| event(f, "fw", "MODIFIED", "hello", |o| state(o).0 == "Reconnecting")).await;
    assert_eq!(waiting["object"]["status"]["reason"], "no Ready pod", "{waiting}");
    mux.until("hello Active on the new pod", |f| event(f, "fw", "MODIFIED", "hello", |o| state(o) == ("Active", next.as_str()))).await;

    // A reload adds a forward, another takes it away.
    write_config(&dir, &format!("{hello}{}", forward("web", "demo", "service/web", "p80", 0)));
    reload(&proxy).await;
    let added = mux.until("web ADDED", |f| event(f, "fw", "ADDED", "web", |_| true)).await;
    assert_eq!(added["object"]["metadata"]["namespace"], "demo");
    mux.until("web Active", |f| event(f, "fw", "MODIFIED", "web", |o| state(o).0 == "Active")).await;
    write_config(&dir, &hello);
    reload(&proxy).await;
    let deleted = mux.until("web DELETED", |f| event(f, "fw", "DELETED", "web", |_| true)).await;
    let version = deleted["object"]["metadata"]["resourceVersion"].as_str().expect("a version").to_owned();

    // A namespace's collection shows that namespace's forwards only.
    mux.watch("demo", "/apis/kubemux.dev/v1/namespaces/demo/forwards", None).await;
    mux.until("the demo snapshot's synced", |f| f["op"] == "synced" && f["id"] == "demo").await;
    assert!(!mux.frames.iter().any(|f| f["op"] == "event" && f["id"] == "demo"), "hello is not in demo: {:#?}", mux.frames);

    // A resume at the current version: synced alone, no reset, no snapshot.
    let mut again = Mux::open(&proxy).await;
    again.watch("fw", FORWARDS, Some(&version)).await;
    let synced = again.until("the resume's synced", |f| f["op"] == "synced" && f["id"] == "fw").await;
    assert_eq!(synced["resourceVersion"], version.as_str());
    assert!(again.frames.iter().all(|f| f["op"] != "reset" && f["op"] != "event"), "{:#?}", again.frames);
    // A version of another proxy process: reset, then the snapshot.
    again.watch("foreign", FORWARDS, Some("17-3")).await;
    again.until("the foreign resume's reset", |f| f["op"] == "reset" && f["id"] == "foreign").await;
    again.until("hello in the new snapshot", |f| event(f, "foreign", "ADDED", "hello", |o| state(o) == ("Active", next.as_str()))).await;
    again.until("the foreign resume's synced", |f| f["op"] == "synced" && f["id"] == "foreign").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_token_mode_a_token_sees_the_forwards_of_namespaces_it_may_port_forward_in() {
    let users = ["admin:admin-token:*", "viewer:viewer-token:default"].map(|u| User::parse(u).unwrap()).to_vec();
    let sim = sim(users).await;
    let dir = folder("mux-token", &sim, Some("admin-token"));
    let forwards = format!("{}{}", forward("hello", "default", "deployment/hello", "8000", 0), forward("web", "demo", "service/web", "p80", 0));
    std::fs::write(dir.join("proxy.yaml"), format!("auth:\n  mode: token\nclusters:\n  - name: sim\n    kubeconfig: sim.kubeconfig\nforwards:\n{forwards}")).unwrap();
    let proxy = start(&dir).await;
    // The viewer may port-forward in default only: hello, not web.
    let mut viewer = Mux::open_as(&proxy, &[("authorization", "Bearer viewer-token")]).await;
    viewer.watch("all", FORWARDS, None).await;
    viewer.until("the viewer's snapshot", |f| f["op"] == "synced" && f["id"] == "all").await;
    assert_eq!(viewer.events("all"), [("ADDED".to_owned(), "hello".to_owned())], "{:#?}", viewer.frames);
    viewer.watch("demo", "/apis/kubemux.dev/v1/namespaces/demo/forwards", None).await;
    let refused = viewer.until("the viewer's 403 for demo", |f| f["op"] == "error" && f["id"] == "demo").await;
    assert_eq!((refused["fatal"].as_bool(), refused["status"]["code"].as_u64()), (Some(true), Some(403)), "{refused}");
    assert!(viewer.events("demo").is_empty());
    // The admin sees both.
    let mut admin = Mux::open_as(&proxy, &[("authorization", "Bearer admin-token")]).await;
    admin.watch("all", FORWARDS, None).await;
    admin.until("the admin's snapshot", |f| f["op"] == "synced" && f["id"] == "all").await;
    let mut names: Vec<String> = admin.events("all").into_iter().map(|(_, name)| name).collect();
    names.sort();
    assert_eq!(names, ["hello", "web"], "{:#?}", admin.frames);
    proxy.shutdown().await;
}
