//! Talking to a kube-sim directly: a full-access client, the `/_sim/` hooks, lists compared the
//! way users see them, and waiting for the simulator's revision to move on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::wait::changed_until;

/// A kube client for the simulator (full access).
pub async fn sim_client(sim: &kube_sim::Sim) -> kube::Client {
    let config = kube::Config::new(sim.url().parse().expect("the sim URL parses"));
    kube::Client::try_from(config).expect("a client")
}

/// Calls a `/_sim/` hook.
pub async fn hook(client: &kube::Client, method: &str, path: &str) -> Value {
    let req = http_request(method, path);
    let text = client.request_text(req).await.unwrap_or_else(|e| panic!("hook {method} {path}: {e}"));
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn http_request(method: &str, path: &str) -> http::Request<Vec<u8>> {
    http::Request::builder().method(method).uri(path).body(Vec::new()).expect("a valid request")
}

/// A collection straight from the simulator: (namespace, name) → object.
pub async fn list(client: &kube::Client, path: &str) -> BTreeMap<(String, String), Value> {
    let list: Value = client.request(http_request("GET", path)).await.expect("a list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| ((o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(), o["metadata"]["name"].as_str().unwrap_or_default().to_owned()), o.clone()))
        .collect()
}

/// Objects compared as users see them: the same names, each with the same content, ignoring
/// `kind`/`apiVersion`, which built-in lists leave out of their items.
pub fn same_objects(a: &BTreeMap<(String, String), Value>, b: &BTreeMap<(String, String), Value>) -> Result<(), String> {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(map) = o.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        o
    };
    if a.keys().ne(b.keys()) {
        return Err(format!("names differ: {:?} vs {:?}", a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>()));
    }
    for (key, object) in a {
        if strip(object) != strip(&b[key]) {
            return Err(format!("{key:?} differs: {} vs {}", object["metadata"]["resourceVersion"], b[key]["metadata"]["resourceVersion"]));
        }
    }
    Ok(())
}

/// Waits, on the store's own revision channel, until `changes` more writes have happened in
/// `sim` than when called; returns the revision reached.
pub async fn revisions_pass(sim: &kube_sim::Sim, changes: u64, deadline: Duration) -> u64 {
    let mut revisions = sim.state().store.subscribe_revisions();
    let start = *revisions.borrow_and_update();
    changed_until(&mut revisions, deadline, &format!("{changes} changes in the simulator after revision {start}"), |rv| *rv >= start + changes).await
}
