//! `--churn N`: about N changes per second to objects labelled `kube-sim/churn=true`, so that
//! watches have something to show. Mostly small annotation and status updates; now and then a
//! pod dies and is replaced, with an Event recording it, as on a real cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::SimState;
use crate::api::hooks::restart_pod;
use crate::resources::{CONFIGMAPS, EVENTS, PODS};
use crate::seed::CHURN_LABEL;
use crate::store::now_timestamp;

/// Events kept per namespace; older ones are deleted, as the API server's TTL would.
const MAX_EVENTS_PER_NAMESPACE: usize = 50;

/// Runs until shutdown, at the rate `/_sim/churn` last set (the `--churn` flag at start).
pub async fn run(state: Arc<SimState>) {
    let mut rate = state.hooks.subscribe_churn_rate();
    let mut beat: u64 = 0;
    loop {
        let per_second = *rate.borrow_and_update();
        if per_second <= 0.0 {
            tokio::select! {
                _ = rate.changed() => continue,
                _ = state.shutdown.cancelled() => return,
            }
        }
        let period = Duration::from_secs_f64(1.0 / per_second.clamp(0.01, 10_000.0));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = rate.changed() => break,
                _ = state.shutdown.cancelled() => return,
            }
            beat += 1;
            // A failed step (e.g. the pod was deleted meanwhile) is simply skipped.
            let _ = step(&state, beat);
        }
    }
}

fn churnable(object: &Value) -> bool {
    object.pointer(&format!("/metadata/labels/{}", CHURN_LABEL.replace('/', "~1"))).and_then(Value::as_str) == Some("true")
}

/// Sets `value` at `path`, creating objects where nothing is. Objects are written by users
/// (`kubectl patch` can make `data` a string), so where something other than an object is in
/// the way the change is left out instead of indexing into it, which would panic.
fn set_in(object: &mut Value, path: &[&str], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut at = object;
    for key in parents {
        if at.is_null() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else { return false };
        at = map.entry(*key).or_insert(Value::Null);
    }
    if at.is_null() {
        *at = json!({});
    }
    match at.as_object_mut() {
        Some(map) => {
            map.insert((*last).to_owned(), value);
            true
        }
        None => false,
    }
}

fn step(state: &SimState, beat: u64) -> Result<(), crate::status::ApiError> {
    let store = &state.store;
    let pods: Vec<Arc<Value>> = store.list(&PODS, None).1.into_iter().filter(|p| churnable(p)).collect();
    if pods.is_empty() {
        return Ok(());
    }
    let pod = &pods[fastrand::usize(..pods.len())];
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    match fastrand::u8(0..100) {
        0..60 => {
            let pod = store.modify(&PODS, &ns, &name, |p| {
                set_in(p, &["metadata", "annotations", "kube-sim/heartbeat"], json!(beat.to_string()));
                Ok(())
            })?;
            // The container serves a request and logs it.
            if let Some(container) = pod.pointer("/spec/containers/0/name").and_then(Value::as_str) {
                let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
                let line = format!("10.244.0.1 - - \"GET /healthz HTTP/1.1\" 200 2 \"-\" \"kube-probe/1.32\" beat={beat}");
                crate::logs::with_start(state, &pod, container, |start| state.logs.append(uid, container, start, line));
            }
        }
        60..85 => {
            // A container restarts: its count goes up and it is briefly not ready.
            let mut container = String::new();
            store.modify(&PODS, &ns, &name, |p| {
                if let Some(status) = p.pointer_mut("/status/containerStatuses/0").and_then(Value::as_object_mut) {
                    container = status.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let restarts = status.get("restartCount").and_then(Value::as_i64).unwrap_or(0).saturating_add(1);
                    status.insert("restartCount".into(), json!(restarts));
                    status.insert("lastState".into(), json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": now_timestamp()}}));
                    status.insert("state".into(), json!({"running": {"startedAt": now_timestamp()}}));
                }
                Ok(())
            })?;
            if let Some(pod) = store.get(&PODS, &ns, &name) {
                let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
                crate::logs::with_start(state, &pod, &container, |start| state.logs.restart(uid, &container, start, chrono::Utc::now()));
            }
            record_event(state, &ns, (&name, uid), "BackOff", &format!("Back-off restarting failed container {container} in pod {name}"), "Warning")?;
        }
        85..95 => {
            let maps: Vec<Arc<Value>> = store.list(&CONFIGMAPS, Some(&ns)).1.into_iter().filter(|c| c["metadata"]["name"] != "kube-root-ca.crt").collect();
            if let Some(map) = maps.get(fastrand::usize(..maps.len().max(1))) {
                let map_name = map["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                store.modify(&CONFIGMAPS, &ns, &map_name, |c| {
                    set_in(c, &["data", "revision"], json!(beat.to_string()));
                    Ok(())
                })?;
            }
        }
        _ => {
            let replacement = restart_pod(state, &ns, &name, crate::controller::Born::Ready)?;
            let new_name = replacement["metadata"]["name"].as_str().unwrap_or_default();
            let new_uid = replacement["metadata"]["uid"].as_str().unwrap_or_default();
            let node = replacement["spec"]["nodeName"].as_str().unwrap_or("sim-node-1");
            record_event(state, &ns, (&name, uid), "Killing", "Stopping container", "Normal")?;
            record_event(state, &ns, (new_name, new_uid), "Scheduled", &format!("Successfully assigned {ns}/{new_name} to {node}"), "Normal")?;
        }
    }
    Ok(())
}

/// Records an Event about the pod `(name, uid)`, as the kubelet would.
fn record_event(state: &SimState, ns: &str, (pod, uid): (&str, &str), reason: &str, message: &str, kind: &str) -> Result<(), crate::status::ApiError> {
    let store = &state.store;
    store.create(&EVENTS, ns, json!({
        "metadata": {"generateName": format!("{pod}.")},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid, "apiVersion": "v1"},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": "sim-node-1"},
    }))?;
    let (_, mut events) = store.list(&EVENTS, Some(ns));
    if events.len() > MAX_EVENTS_PER_NAMESPACE {
        events.sort_by(|a, b| a["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse::<u64>().ok()).cmp(&b["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse::<u64>().ok())));
        for old in &events[..events.len() - MAX_EVENTS_PER_NAMESPACE] {
            let _ = store.delete(&EVENTS, ns, old["metadata"]["name"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}
