//! The Deployment and ReplicaSet controllers, as kube-controller-manager runs them, in small:
//! a Deployment owns one ReplicaSet per pod template (named and labelled by the template's
//! `pod-template-hash`), each ReplicaSet owns its pods, a template change rolls out within the
//! RollingUpdate strategy's `maxSurge`/`maxUnavailable` (or Recreate), and both report the
//! status `kubectl rollout status` and `kubectl get` read. Owners that are gone take what they
//! owned with them (the garbage collector's background deletion).
//!
//! Each pass reads the store and makes one step of writes; the writes' own events wake the next
//! pass, so a rollout advances one step per pass until nothing changes. Pods are born Running
//! and Ready (`defaults`), so each step is available at once; only the restart hook's
//! `readyAfterSeconds` makes one born not Ready ([`Born`]).

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::SimState;
use crate::resources::{DEPLOYMENTS, NODES, PODS, REPLICASETS, ResourceDef};
use crate::status::ApiError;
use crate::store::{Store, now_timestamp};

/// The label a ReplicaSet and its pods carry: which template they were made from.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
/// Passes after which [`settle`] gives up: a rollout of a few pods takes a handful.
const MAX_PASSES: usize = 200;

/// Serialises the controller's read-decide-write steps with the other writers that act for it
/// (the pod-restart hook), so two never create the same missing pod.
#[derive(Default)]
pub struct Controllers {
    lock: Mutex<()>,
}

impl Controllers {
    /// One pass over every namespace; whether anything was written.
    pub fn pass(&self, store: &Store) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        reconcile(store)
    }

    /// Runs `f` while no pass runs.
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }
}

/// Runs passes until nothing changes (the demo seed is born settled, as a cluster that has
/// been up for a while).
pub fn settle(store: &Store) {
    for _ in 0..MAX_PASSES {
        if !reconcile(store) {
            return;
        }
    }
    tracing::warn!("workloads did not settle in {MAX_PASSES} passes");
}

/// Runs until shutdown: a pass after every change to deployments, replicasets or pods.
pub async fn run(state: Arc<SimState>) {
    let mut events = state.store.subscribe_events();
    let relevant = |event: &crate::store::Event| [&DEPLOYMENTS, &REPLICASETS, &PODS].iter().any(|r| std::ptr::eq(event.resource, *r));
    loop {
        for _ in 0..MAX_PASSES {
            if !state.controllers.pass(&state.store) {
                break;
            }
            tokio::task::yield_now().await;
        }
        let next_termination = state.controllers.exclusive(|| end_terminations(&state.store));
        let termination_due = next_termination.map(|at| tokio::time::Instant::now() + (at - chrono::Utc::now()).to_std().unwrap_or_default());
        loop {
            let wake = tokio::select! {
                () = async { if let Some(due) = termination_due { tokio::time::sleep_until(due).await } }, if termination_due.is_some() => true,
                event = events.recv() => match event {
                    Ok(event) => relevant(&event),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                _ = state.shutdown.cancelled() => return,
            };
            if wake {
                break;
            }
        }
        // One pass covers every change queued meanwhile (the churn can be fast).
        while events.try_recv().is_ok() {}
    }
}

/// Starts a graceful deletion as the API server and kubelet do it: `deletionTimestamp` (when
/// the grace ends, rounded up to the second as Kubernetes writes it) and
/// `deletionGracePeriodSeconds` set, Ready and ContainersReady `False`. The pod keeps its
/// processes and port listeners until [`end_terminations`] deletes it; controllers stop
/// counting it at once.
pub(crate) fn begin_termination(store: &Store, namespace: &str, name: &str, grace: Duration) -> Result<Arc<Value>, ApiError> {
    let grace_seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let ends = chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(grace_seconds).unwrap_or(600)) + chrono::Duration::milliseconds(999);
    store.modify(&PODS, namespace, name, |pod| {
        pod["metadata"]["deletionTimestamp"] = json!(ends.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace_seconds);
        set_ready(pod, false);
        Ok(())
    })
}

/// Sets a pod's Ready and ContainersReady conditions, as the kubelet reports readiness.
pub(crate) fn set_ready(pod: &mut Value, ready: bool) {
    for condition in pod.pointer_mut("/status/conditions").and_then(Value::as_array_mut).into_iter().flatten() {
        if condition["type"] == "Ready" || condition["type"] == "ContainersReady" {
            condition["status"] = json!(if ready { "True" } else { "False" });
        }
    }
}

/// How a pod that a controller or hook makes starts out: Ready at once (`defaults`), or not
/// Ready until something marks it so (the restart hook's `readyAfterSeconds`). A pod born not
/// Ready is never Ready for an instant first: its first event already says not Ready, so no
/// watcher (a forward's resolver, a Service's endpoints) can pick it before its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Born {
    /// Running and Ready at once, as every pod of the simulator is by default.
    Ready,
    /// Running, its Ready and ContainersReady conditions `False`.
    NotReady,
}

impl Born {
    /// `object`, a pod about to be created, as it should be born.
    pub(crate) fn shape(self, mut object: Value) -> Value {
        if self == Born::NotReady {
            // The status `defaults` gives a new pod, then readiness taken away; `defaults`
            // leaves a pod that has a status alone when the store creates it.
            crate::defaults::on_create(&PODS, &mut object);
            set_ready(&mut object, false);
        }
        object
    }
}

/// Deletes the terminating pods whose grace is over; returns when the next one's ends.
pub(crate) fn end_terminations(store: &Store) -> Option<chrono::DateTime<chrono::Utc>> {
    let now = chrono::Utc::now();
    let mut next = None;
    for pod in store.list(&PODS, None).1 {
        let Some(ends) = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else { continue };
        let ends = ends.with_timezone(&chrono::Utc);
        if ends <= now {
            let _ = store.delete(&PODS, text(&pod, "/metadata/namespace"), text(&pod, "/metadata/name"));
        } else if next.is_none_or(|n| ends < n) {
            next = Some(ends);
        }
    }
    next
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A ReplicaSet's `deployment.kubernetes.io/revision` (a number, as a string).
fn revision(set: &Value) -> i64 {
    text(set, "/metadata/annotations/deployment.kubernetes.io~1revision").parse().unwrap_or(0)
}

fn uid(object: &Value) -> &str {
    text(object, "/metadata/uid")
}

/// The uid of `object`'s controlling owner of `kind`.
fn controller_uid<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some(kind) && r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid")?.as_str())
}

fn owner_reference(owner: &Value, resource: &ResourceDef) -> Value {
    json!([{"apiVersion": resource.api_version(), "kind": resource.kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// One pass: garbage collection, then deployments, then replicasets. Whether anything changed.
fn reconcile(store: &Store) -> bool {
    let mut changed = collect_garbage(store);
    let (_, deployments) = store.list(&DEPLOYMENTS, None);
    for deployment in &deployments {
        // A failed step (its namespace going away, say) waits for the next change.
        changed |= sync_deployment(store, deployment).unwrap_or_else(|error| {
            tracing::debug!(%error, "deployment step failed");
            false
        });
    }
    let (_, sets) = store.list(&REPLICASETS, None);
    for set in &sets {
        changed |= sync_replica_set(store, set).unwrap_or_else(|error| {
            tracing::debug!(%error, "replicaset step failed");
            false
        });
    }
    changed
}

/// Deletes ReplicaSets whose Deployment is gone and pods whose ReplicaSet is gone.
fn collect_garbage(store: &Store) -> bool {
    let mut changed = false;
    let live: BTreeSet<String> = store.list(&DEPLOYMENTS, None).1.iter().map(|d| uid(d).to_owned()).collect();
    for set in store.list(&REPLICASETS, None).1 {
        if controller_uid(&set, "Deployment").is_some_and(|owner| !live.contains(owner)) {
            changed |= store.delete(&REPLICASETS, text(&set, "/metadata/namespace"), text(&set, "/metadata/name")).is_ok();
        }
    }
    let live: BTreeSet<String> = store.list(&REPLICASETS, None).1.iter().map(|r| uid(r).to_owned()).collect();
    for pod in store.list(&PODS, None).1 {
        if controller_uid(&pod, "ReplicaSet").is_some_and(|owner| !live.contains(owner)) {
            changed |= store.delete(&PODS, text(&pod, "/metadata/namespace"), text(&pod, "/metadata/name")).is_ok();
        }
    }
    changed
}

/// A stable short hash of a pod template, in the alphabet of generated names.
fn template_hash(template: &Value) -> String {
    /// What Go's semantic equality ignores: unset and empty values (`resources: {}`,
    /// `creationTimestamp: null`, the empty strings of a protobuf body), and the hash label
    /// itself, so `kubectl rollout undo`'s copy of an old set's template finds that set.
    fn normalized(value: &Value) -> Option<Value> {
        match value {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::Object(map) => {
                let kept: Map<String, Value> = map.iter().filter(|(k, _)| k.as_str() != POD_TEMPLATE_HASH).filter_map(|(k, v)| Some((k.clone(), normalized(v)?))).collect();
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
            Value::Array(items) if items.is_empty() => None,
            Value::Array(items) => Some(Value::Array(items.iter().map(|v| normalized(v).unwrap_or_else(|| json!({}))).collect())),
            other => Some(other.clone()),
        }
    }
    let mut hasher = DefaultHasher::new();
    normalized(template).unwrap_or_default().to_string().hash(&mut hasher);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = hasher.finish();
    (0..10)
        .map(|_| {
            let c = ALPHABET.get((n % ALPHABET.len() as u64) as usize).copied().unwrap_or(b'x');
            n /= ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

/// `maxSurge`/`maxUnavailable`: an absolute number, or a percentage of `desired` rounded up
/// (surge) or down (unavailable); 25% when unset.
fn resolve(value: Option<&Value>, desired: i64, round_up: bool) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) if s.ends_with('%') => {
            let percent = s.trim_end_matches('%').parse::<i64>().unwrap_or(25).clamp(0, 100);
            let scaled = desired.saturating_mul(percent);
            if round_up { (scaled + 99) / 100 } else { scaled / 100 }
        }
        Some(Value::String(s)) => s.parse::<i64>().unwrap_or(0).max(0),
        _ => resolve(Some(&json!("25%")), desired, round_up),
    }
}

/// A ReplicaSet of a deployment and its live pods.
struct Owned {
    set: Arc<Value>,
    pods: Vec<Arc<Value>>,
}

impl Owned {
    fn name(&self) -> &str {
        text(&self.set, "/metadata/name")
    }
    fn replicas(&self) -> i64 {
        int(&self.set, "/spec/replicas")
    }
    fn available(&self) -> i64 {
        self.pods.iter().filter(|p| is_ready(p)).count() as i64
    }
}

fn live_pods_of(store: &Store, namespace: &str, set: &Value) -> Vec<Arc<Value>> {
    store
        .list(&PODS, Some(namespace))
        .1
        .into_iter()
        .filter(|p| controller_uid(p, "ReplicaSet") == Some(uid(set)) && p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

fn set_replicas(store: &Store, set: &Owned, replicas: i64) -> Result<bool, ApiError> {
    if set.replicas() == replicas {
        return Ok(false);
    }
    store.modify(&REPLICASETS, text(&set.set, "/metadata/namespace"), set.name(), |s| {
        s["spec"]["replicas"] = json!(replicas);
        Ok(())
    })?;
    Ok(true)
}

/// One step of a deployment: its ReplicaSet for the current template exists, replicas move
/// towards the desired count within the strategy's bounds, and the status says where it is.
fn sync_deployment(store: &Store, deployment: &Value) -> Result<bool, ApiError> {
    let namespace = text(deployment, "/metadata/namespace");
    let desired = deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0);
    let template = deployment.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let mut owned: Vec<Owned> = store
        .list(&REPLICASETS, Some(namespace))
        .1
        .into_iter()
        .filter(|s| controller_uid(s, "Deployment") == Some(uid(deployment)))
        .map(|set| Owned { pods: live_pods_of(store, namespace, &set), set })
        .collect();
    owned.sort_by_key(|o| revision(&o.set));
    let position = owned.iter().position(|o| text(&o.set, "/metadata/labels/pod-template-hash") == hash);
    let Some(position) = position else {
        create_replica_set(store, deployment, &template, &hash, &owned, desired)?;
        return Ok(true);
    };
    let new = owned.remove(position);
    let old = owned;
    // A template that is an old ReplicaSet's again (`kubectl rollout undo`) makes that set the
    // newest revision, and the Deployment carries its revision, as the API server's controller
    // does (`kubectl rollout undo` patches the annotations it finds there).
    let newest = old.iter().map(|o| revision(&o.set)).max().unwrap_or(0);
    if revision(&new.set) <= newest {
        store.modify(&REPLICASETS, namespace, new.name(), |set| {
            if !set["metadata"]["annotations"].is_object() {
                set["metadata"]["annotations"] = json!({});
            }
            set["metadata"]["annotations"][REVISION] = json!((newest + 1).to_string());
            Ok(())
        })?;
        return Ok(true);
    }
    let current = revision(&new.set).to_string();
    if deployment.pointer("/metadata/annotations/deployment.kubernetes.io~1revision").and_then(Value::as_str) != Some(current.as_str()) {
        store.modify(&DEPLOYMENTS, namespace, text(deployment, "/metadata/name"), |d| {
            if !d["metadata"]["annotations"].is_object() {
                d["metadata"]["annotations"] = json!({});
            }
            d["metadata"]["annotations"][REVISION] = json!(current);
            Ok(())
        })?;
        return Ok(true);
    }
    let paused = deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if !paused && step(store, deployment, desired, &new, &old)? {
        return Ok(true);
    }
    update_deployment_status(store, deployment, desired, &new, &old)
}

/// Moves replicas by one step of the strategy; whether anything was written.
fn step(store: &Store, deployment: &Value, desired: i64, new: &Owned, old: &[Owned]) -> Result<bool, ApiError> {
    let old_replicas: i64 = old.iter().map(Owned::replicas).sum();
    if old_replicas == 0 {
        // Nothing to roll away from: a scale, or the end of a rollout.
        return set_replicas(store, new, desired);
    }
    if text(deployment, "/spec/strategy/type") == "Recreate" {
        // Every old pod goes first; the new ReplicaSet starts once none is left.
        let mut changed = false;
        for set in old {
            changed |= set_replicas(store, set, 0)?;
        }
        let old_pods: usize = old.iter().map(|o| o.pods.len()).sum();
        if !changed && old_pods == 0 {
            changed |= set_replicas(store, new, desired)?;
        }
        return Ok(changed);
    }
    let rolling = deployment.pointer("/spec/strategy/rollingUpdate");
    let max_surge = resolve(rolling.and_then(|r| r.get("maxSurge")), desired, true);
    let mut max_unavailable = resolve(rolling.and_then(|r| r.get("maxUnavailable")), desired, false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    // Scale up the new ReplicaSet as far as the surge allows.
    let total = new.replicas() + old_replicas;
    if new.replicas() < desired {
        let allowed = (desired + max_surge - total).max(0);
        if allowed > 0 {
            return set_replicas(store, new, (new.replicas() + allowed).min(desired));
        }
    }
    // Scale down old ReplicaSets as far as availability allows: their unavailable pods first
    // (they count for nothing), then available ones while `desired - maxUnavailable` stay.
    let available: i64 = new.available() + old.iter().map(Owned::available).sum::<i64>();
    let min_available = desired - max_unavailable;
    let new_unavailable = (new.replicas() - new.available()).max(0);
    let mut budget = (total - min_available - new_unavailable).max(0);
    let mut available_budget = (available - min_available).max(0);
    let mut changed = false;
    for set in old {
        if budget == 0 {
            break;
        }
        let unhealthy = (set.replicas() - set.available()).max(0).min(budget);
        let healthy = (set.replicas() - unhealthy).min(budget - unhealthy).min(available_budget);
        let down = unhealthy + healthy;
        if down > 0 {
            changed |= set_replicas(store, set, set.replicas() - down)?;
            budget -= down;
            available_budget -= healthy;
        }
    }
    Ok(changed)
}

fn create_replica_set(store: &Store, deployment: &Value, template: &Value, hash: &str, owned: &[Owned], desired: i64) -> Result<(), ApiError> {
    let namespace = text(deployment, "/metadata/namespace");
    let name = text(deployment, "/metadata/name");
    let revision = owned.iter().map(|o| revision(&o.set)).max().unwrap_or(0) + 1;
    let mut template = template.clone();
    if !template.get("metadata").is_some_and(Value::is_object) {
        template["metadata"] = json!({});
    }
    if !template["metadata"].get("labels").is_some_and(Value::is_object) {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut match_labels = deployment.pointer("/spec/selector/matchLabels").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    match_labels[POD_TEMPLATE_HASH] = json!(hash);
    // The first ReplicaSet starts at full size; later ones grow as the rollout allows.
    let replicas = if owned.iter().all(|o| o.replicas() == 0) && text(deployment, "/spec/strategy/type") != "Recreate" { desired } else { 0 };
    store.create(&REPLICASETS, namespace, json!({
        "metadata": {
            "name": format!("{name}-{hash}"),
            "labels": template["metadata"]["labels"],
            "annotations": {REVISION: revision.to_string(), "deployment.kubernetes.io/desired-replicas": desired.to_string()},
            "ownerReferences": owner_reference(deployment, &DEPLOYMENTS),
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": match_labels}, "template": template},
    }))?;
    Ok(())
}

/// Sets `conditions[type]`, keeping `lastTransitionTime` while the status stays and
/// `lastUpdateTime` while nothing about it changes.
fn set_condition(conditions: &mut Vec<Value>, kind: &str, status: &str, reason: &str, message: &str) {
    let now = now_timestamp();
    let existing = conditions.iter_mut().find(|c| c["type"] == kind);
    match existing {
        Some(c) if c["status"] == status && c["reason"] == reason && c["message"] == message => {}
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            c["lastUpdateTime"] = json!(now);
        }
        None => conditions.push(json!({"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now})),
    }
}

fn update_deployment_status(store: &Store, deployment: &Value, desired: i64, new: &Owned, old: &[Owned]) -> Result<bool, ApiError> {
    let all = || std::iter::once(new).chain(old);
    let replicas: i64 = all().map(|o| o.pods.len() as i64).sum();
    let available: i64 = all().map(Owned::available).sum();
    let updated = new.pods.len() as i64;
    let rolling = deployment.pointer("/spec/strategy/rollingUpdate");
    let max_unavailable = if text(deployment, "/spec/strategy/type") == "Recreate" { 0 } else { resolve(rolling.and_then(|r| r.get("maxUnavailable")), desired, false) };
    let mut conditions: Vec<Value> = deployment.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if available >= desired - max_unavailable {
        set_condition(&mut conditions, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.");
    } else {
        set_condition(&mut conditions, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.");
    }
    let complete = updated == desired && replicas == desired && available == desired;
    let (reason, message) = if complete {
        ("NewReplicaSetAvailable", format!("ReplicaSet {:?} has successfully progressed.", new.name()))
    } else {
        ("ReplicaSetUpdated", format!("ReplicaSet {:?} is progressing.", new.name()))
    };
    set_condition(&mut conditions, "Progressing", "True", reason, &message);
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(int(deployment, "/metadata/generation")));
    status.insert("replicas".into(), json!(replicas));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("readyReplicas".into(), json!(available));
    status.insert("availableReplicas".into(), json!(available));
    if desired > available {
        status.insert("unavailableReplicas".into(), json!(desired - available));
    }
    status.insert("conditions".into(), Value::Array(conditions));
    let status = Value::Object(status);
    if deployment.get("status") == Some(&status) {
        return Ok(false);
    }
    // Only the status: a spec changed since this pass read it is the next pass's business.
    store.modify(&DEPLOYMENTS, text(deployment, "/metadata/namespace"), text(deployment, "/metadata/name"), |d| {
        d["status"] = status;
        Ok(())
    })?;
    Ok(true)
}

/// The node with the fewest pods, so a ReplicaSet's pods spread as the scheduler would.
fn pick_node(store: &Store) -> Option<String> {
    let (_, pods) = store.list(&PODS, None);
    store
        .list(&NODES, None)
        .1
        .iter()
        .filter_map(|n| n.pointer("/metadata/name")?.as_str())
        .min_by_key(|node| pods.iter().filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)).count())
        .map(str::to_owned)
}

/// One step of a ReplicaSet: as many pods as it wants (new ones from its template, extra
/// ones deleted, unready and newest first), and its status.
pub(crate) fn sync_replica_set(store: &Store, set: &Value) -> Result<bool, ApiError> {
    let namespace = text(set, "/metadata/namespace");
    let name = text(set, "/metadata/name");
    let wanted = int(set, "/spec/replicas").max(0);
    let mut pods = live_pods_of(store, namespace, set);
    let mut changed = false;
    let missing = wanted - pods.len() as i64;
    for _ in 0..missing.max(0) {
        pods.push(create_pod(store, set)?);
        changed = true;
    }
    if missing < 0 {
        pods.sort_by(|a, b| {
            let key = |p: &Value| (is_ready(p), text(p, "/metadata/creationTimestamp").to_owned(), text(p, "/metadata/name").to_owned());
            key(a).cmp(&key(b))
        });
        for pod in pods.drain(..missing.unsigned_abs() as usize) {
            // A pod with a termination grace period terminates first (Ready no more, serving
            // its open connections), and goes when the grace is over (`run`'s timer).
            match pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_f64).filter(|g| *g > 0.0) {
                Some(grace) => {
                    begin_termination(store, namespace, text(&pod, "/metadata/name"), Duration::from_secs_f64(grace.min(600.0)))?;
                }
                None => {
                    store.delete(&PODS, namespace, text(&pod, "/metadata/name"))?;
                }
            }
            changed = true;
        }
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let status = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "readyReplicas": ready,
                        "availableReplicas": ready, "observedGeneration": int(set, "/metadata/generation")});
    if set.get("status") != Some(&status) {
        store.modify(&REPLICASETS, namespace, name, |s| {
            s["status"] = status;
            Ok(())
        })?;
        changed = true;
    }
    Ok(changed)
}

fn create_pod(store: &Store, set: &Value) -> Result<Arc<Value>, ApiError> {
    create_pod_as(store, set, Born::Ready)
}

/// A new pod of the ReplicaSet `set`, from its template, born as `born` says.
pub(crate) fn create_pod_as(store: &Store, set: &Value, born: Born) -> Result<Arc<Value>, ApiError> {
    let template = set.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = template.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    metadata["generateName"] = json!(format!("{}-", text(set, "/metadata/name")));
    metadata["ownerReferences"] = owner_reference(set, &REPLICASETS);
    let mut spec = template.get("spec").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    if let Some(node) = pick_node(store) {
        spec["nodeName"] = json!(node);
    }
    store.create(&PODS, text(set, "/metadata/namespace"), born.shape(json!({"metadata": metadata, "spec": spec})))
}

/// The ReplicaSet controlling `pod`, if there is one.
pub(crate) fn owner_of(store: &Store, pod: &Value) -> Option<Arc<Value>> {
    let owner = controller_uid(pod, "ReplicaSet")?;
    store.list(&REPLICASETS, Some(text(pod, "/metadata/namespace"))).1.into_iter().find(|s| uid(s) == owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::NAMESPACES;

    fn store_with(deployment: Value) -> Store {
        let store = Store::new(1, 10_000);
        store.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}})).unwrap();
        store.create(&DEPLOYMENTS, "ns", deployment).unwrap();
        store
    }

    fn deployment(replicas: i64, strategy: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    /// Pods per template hash, and the deployment's status, after each pass of a rollout.
    fn roll(store: &Store) -> Vec<(usize, usize)> {
        let mut seen = Vec::new();
        let hash_before = template_hash(&store.get(&DEPLOYMENTS, "ns", "web").unwrap()["spec"]["template"]);
        store.modify(&DEPLOYMENTS, "ns", "web", |d| {
            d["spec"]["template"]["metadata"]["annotations"] = json!({"restartedAt": "now"});
            Ok(())
        }).unwrap();
        for _ in 0..MAX_PASSES {
            let changed = reconcile(store);
            let pods = store.list(&PODS, Some("ns")).1;
            let old = pods.iter().filter(|p| text(p, "/metadata/labels/pod-template-hash") == hash_before).count();
            seen.push((old, pods.len() - old));
            if !changed {
                break;
            }
        }
        seen
    }

    #[test]
    fn a_deployment_owns_a_replica_set_that_owns_its_pods() {
        let store = store_with(deployment(3, json!({})));
        settle(&store);
        let sets = store.list(&REPLICASETS, Some("ns")).1;
        assert_eq!(sets.len(), 1);
        let hash = text(&sets[0], "/metadata/labels/pod-template-hash").to_owned();
        assert_eq!(sets[0]["metadata"]["name"], format!("web-{hash}"));
        let pods = store.list(&PODS, Some("ns")).1;
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|p| controller_uid(p, "ReplicaSet") == Some(uid(&sets[0])) && p["metadata"]["labels"]["pod-template-hash"] == hash.as_str()));
        let status = &store.get(&DEPLOYMENTS, "ns", "web").unwrap()["status"];
        assert_eq!((status["replicas"].as_i64(), status["updatedReplicas"].as_i64(), status["availableReplicas"].as_i64(), status["observedGeneration"].as_i64()), (Some(3), Some(3), Some(3), Some(1)));
        assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");

        store.delete(&DEPLOYMENTS, "ns", "web").unwrap();
        settle(&store);
        assert!(store.list(&REPLICASETS, None).1.is_empty() && store.list(&PODS, None).1.is_empty(), "owned objects are collected");
    }

    #[test]
    fn rolling_updates_stay_within_surge_and_unavailability() {
        for (surge, unavailable) in [(json!(1), json!(0)), (json!("25%"), json!("25%")), (json!(0), json!(2)), (json!(2), json!(1))] {
            let store = store_with(deployment(4, json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})));
            settle(&store);
            let (max_surge, max_unavailable) = (resolve(Some(&surge), 4, true), resolve(Some(&unavailable), 4, false));
            let steps = roll(&store);
            assert_eq!(steps.last(), Some(&(0, 4)), "{surge}/{unavailable}: {steps:?}");
            for (old, new) in &steps {
                // Pods are ready when created, so every live pod is available.
                assert!((old + new) as i64 <= 4 + max_surge && (old + new) as i64 >= 4 - max_unavailable, "{surge}/{unavailable}: {steps:?}");
            }
        }
    }

    #[test]
    fn recreate_stops_every_old_pod_first() {
        let store = store_with(deployment(2, json!({"type": "Recreate"})));
        settle(&store);
        let steps = roll(&store);
        assert!(steps.iter().all(|(old, new)| *old == 0 || *new == 0), "{steps:?}");
        assert_eq!(steps.last(), Some(&(0, 2)));
    }

    #[test]
    fn surge_and_unavailability_resolve_like_the_controller() {
        assert_eq!((resolve(None, 3, true), resolve(None, 3, false)), (1, 0));
        assert_eq!((resolve(Some(&json!("50%")), 5, true), resolve(Some(&json!("50%")), 5, false)), (3, 2));
        assert_eq!(resolve(Some(&json!(2)), 10, true), 2);
    }
}
