//! Test hooks under `/_sim/` (never under `/api`): provoke what real clusters do rarely, and
//! look inside. Documented in `kube-sim/README.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query as AxumQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::SimState;
use crate::controller::Born;
use crate::resources::PODS;
use crate::status::ApiError;
use crate::store::Store;

/// Controls and counters the hooks and the watch/list handlers share.
pub struct HookState {
    /// Bumped to end every open watch cleanly.
    pub close_epoch: watch::Sender<u64>,
    stall_until: Mutex<Option<Instant>>,
    faults: Mutex<Vec<Fault>>,
    /// Watches open right now.
    pub open_watches: AtomicU64,
    /// Watch requests served since start.
    pub watch_requests: AtomicU64,
    /// List requests served since start.
    pub list_requests: AtomicU64,
    churn_rate: watch::Sender<f64>,
}

impl Default for HookState {
    fn default() -> Self {
        HookState {
            close_epoch: watch::channel(0).0,
            stall_until: Mutex::new(None),
            faults: Mutex::new(Vec::new()),
            open_watches: AtomicU64::new(0),
            watch_requests: AtomicU64::new(0),
            list_requests: AtomicU64::new(0),
            churn_rate: watch::channel(0.0).0,
        }
    }
}

/// An injected failure for the next `count` requests under `path_prefix`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Requests whose path starts with this fail.
    pub path_prefix: String,
    /// The HTTP status they fail with.
    pub status: u16,
    /// How many requests fail.
    pub count: u32,
}

impl HookState {
    /// Sets the churn rate (changes per second; 0 stops churn).
    pub fn set_churn_rate(&self, per_second: f64) {
        self.churn_rate.send_replace(per_second);
    }

    /// Follows the churn rate.
    pub fn subscribe_churn_rate(&self) -> watch::Receiver<f64> {
        self.churn_rate.subscribe()
    }

    /// When a stall is in force, the instant it ends.
    pub fn stalled_until(&self) -> Option<Instant> {
        let mut stall = self.stall_until.lock().unwrap_or_else(|p| p.into_inner());
        match *stall {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                *stall = None;
                None
            }
        }
    }

    /// Consumes one matching injected fault, returning its status code.
    pub fn take_fault(&self, path: &str) -> Option<u16> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let index = faults.iter().position(|f| path.starts_with(&f.path_prefix))?;
        let status = faults[index].status;
        faults[index].count -= 1;
        if faults[index].count == 0 {
            faults.remove(index);
        }
        Some(status)
    }
}

/// The `/_sim` routes.
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/compact", post(compact))
        .route("/watches/close", post(close_watches))
        .route("/watches/stall", post(stall_watches))
        .route("/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/pods/{namespace}/{name}/restart", post(restart))
        .route("/churn", post(set_churn))
        .route("/processes", get(processes))
        .route("/stats", get(stats))
        .nest("/portforward", super::forward_hooks::router())
}

async fn compact(State(state): State<Arc<SimState>>) -> Json<Value> {
    let rv = state.store.compact();
    Json(json!({"compactedUpTo": (rv - 1).to_string(), "resourceVersion": rv.to_string()}))
}

async fn close_watches(State(state): State<Arc<SimState>>) -> Json<Value> {
    let open = state.hooks.open_watches.load(Ordering::Relaxed);
    state.hooks.close_epoch.send_modify(|epoch| *epoch += 1);
    Json(json!({"closed": open}))
}

#[derive(Deserialize)]
struct StallQuery {
    seconds: f64,
}

async fn stall_watches(State(state): State<Arc<SimState>>, query: Result<AxumQuery<StallQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let Ok(AxumQuery(StallQuery { seconds })) = query else {
        return ApiError::bad_request("expected ?seconds=N").into_response();
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return ApiError::bad_request("seconds must be between 0 and 86400").into_response();
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    *state.hooks.stall_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    Json(json!({"stalledForSeconds": seconds})).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChurnQuery {
    per_second: f64,
}

async fn set_churn(State(state): State<Arc<SimState>>, query: Result<AxumQuery<ChurnQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    match query {
        Ok(AxumQuery(ChurnQuery { per_second })) if (0.0..=10_000.0).contains(&per_second) => {
            state.hooks.set_churn_rate(per_second);
            Json(json!({"perSecond": per_second})).into_response()
        }
        _ => ApiError::bad_request("expected ?perSecond=N with 0 <= N <= 10000").into_response(),
    }
}

async fn add_fault(State(state): State<Arc<SimState>>, body: Result<Json<Fault>, axum::extract::rejection::JsonRejection>) -> Response {
    let fault = match body {
        Ok(Json(fault)) => fault,
        Err(rejection) => return ApiError::bad_request(format!("expected {{\"pathPrefix\":…,\"status\":…,\"count\":…}}: {rejection}")).into_response(),
    };
    if !(400..=599).contains(&fault.status) || fault.count == 0 || !fault.path_prefix.starts_with('/') {
        return ApiError::bad_request("status must be 400-599, count at least 1, pathPrefix an absolute path").into_response();
    }
    state.hooks.faults.lock().unwrap_or_else(|p| p.into_inner()).push(fault.clone());
    (axum::http::StatusCode::CREATED, Json(json!(fault))).into_response()
}

async fn list_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!(*state.hooks.faults.lock().unwrap_or_else(|p| p.into_inner())))
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.hooks.faults.lock().unwrap_or_else(|p| p.into_inner()).clear();
    Json(json!([]))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartQuery {
    grace_period_seconds: Option<f64>,
    /// The replacement turns Ready only this long after it is made (as an app that takes time
    /// to start does), so that what waits for a Ready pod can be seen waiting.
    ready_after_seconds: Option<f64>,
}

/// `POST /_sim/pods/{ns}/{name}/restart[?gracePeriodSeconds=N][&readyAfterSeconds=M]`: the
/// replacement pod, not Ready for `M` seconds if given.
async fn restart(State(state): State<Arc<SimState>>, Path((namespace, name)): Path<(String, String)>, query: Result<AxumQuery<RestartQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let Ok(AxumQuery(RestartQuery { grace_period_seconds, ready_after_seconds })) = query else {
        return ApiError::bad_request("expected ?gracePeriodSeconds=N&readyAfterSeconds=M (both optional)").into_response();
    };
    let grace = grace_period_seconds.unwrap_or(0.0);
    if !(0.0..=600.0).contains(&grace) {
        return ApiError::bad_request("gracePeriodSeconds must be between 0 and 600").into_response();
    }
    let ready_after = ready_after_seconds.unwrap_or(0.0);
    if !(0.0..=600.0).contains(&ready_after) {
        return ApiError::bad_request("readyAfterSeconds must be between 0 and 600").into_response();
    }
    let grace = Duration::from_secs_f64(grace);
    let born = if ready_after == 0.0 { Born::Ready } else { Born::NotReady };
    let restarted = if grace.is_zero() { restart_pod(&state, &namespace, &name, born) } else { restart_gracefully(&state, &namespace, &name, grace, born) };
    let pod = match restarted {
        Ok(pod) => pod,
        Err(error) => return error.into_response(),
    };
    if born == Born::NotReady
        && let Some(replacement) = pod.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned)
    {
        let later = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(ready_after)).await;
            // Gone meanwhile (restarted again, deleted): nothing to make Ready.
            let _ = later.store.modify(&PODS, &namespace, &replacement, |pod| {
                crate::controller::set_ready(pod, true);
                Ok(())
            });
        });
    }
    Json(pod).into_response()
}

/// Deletes a pod and returns its replacement: a new name (same prefix), the same labels,
/// annotations and spec, a fresh status. A pod of a ReplicaSet is replaced by its ReplicaSet;
/// any other pod is recreated here, as if something owned it. The replacement is born as
/// `born` says.
pub fn restart_pod(state: &SimState, namespace: &str, name: &str, born: Born) -> Result<Value, ApiError> {
    let store = &state.store;
    state.controllers.exclusive(|| {
        let pod = store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
        match crate::controller::owner_of(store, &pod) {
            Some(set) => {
                store.delete(&PODS, namespace, name)?;
                replace_from_set(store, namespace, name, &set, born)
            }
            None => {
                let old = store.delete(&PODS, namespace, name)?;
                recreate(store, namespace, name, &old, born)
            }
        }
    })
}

/// A restart as a graceful deletion ([`crate::controller::begin_termination`]): the pod turns
/// terminating at once, its replacement is made at once, and the old pod (its processes and
/// port listeners, so its open connections) lives until the grace period is over, when the
/// controller deletes it.
fn restart_gracefully(state: &Arc<SimState>, namespace: &str, name: &str, grace: Duration, born: Born) -> Result<Value, ApiError> {
    let store = &state.store;
    state.controllers.exclusive(|| {
        let pod = store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
        if pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            return Err(ApiError::conflict("pods", name));
        }
        let old = crate::controller::begin_termination(store, namespace, name, grace)?;
        match crate::controller::owner_of(store, &old) {
            Some(set) => replace_from_set(store, namespace, name, &set, born),
            None => recreate(store, namespace, name, &old, born),
        }
    })
}

/// The pod a ReplicaSet made to replace `name` (gone or terminating). One born not Ready is
/// made here, from the set's template, before the set's own step, which then finds its pods
/// complete.
fn replace_from_set(store: &Store, namespace: &str, name: &str, set: &Value, born: Born) -> Result<Value, ApiError> {
    let before: Vec<String> = store.list(&PODS, Some(namespace)).1.iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned)).collect();
    if born == Born::NotReady {
        crate::controller::create_pod_as(store, set, born)?;
    }
    crate::controller::sync_replica_set(store, set)?;
    let (_, pods) = store.list(&PODS, Some(namespace));
    let replacement = pods.iter().find(|p| p["metadata"]["name"].as_str().is_some_and(|n| !before.iter().any(|b| b == n)));
    replacement.map(|p| (**p).clone()).ok_or_else(|| ApiError::internal(format!("replicaset {} made no replacement for {name}", set["metadata"]["name"])))
}

/// Creates an unowned pod (`old`, deleted or terminating) again under a new name with the
/// same prefix, born as `born` says.
fn recreate(store: &Store, namespace: &str, name: &str, old: &Value, born: Born) -> Result<Value, ApiError> {
    let prefix = match old.pointer("/metadata/generateName").and_then(Value::as_str) {
        Some(prefix) if !prefix.is_empty() => prefix.to_owned(),
        _ => match name.rsplit_once('-') {
            Some((base, suffix)) if suffix.len() == 5 => format!("{base}-"),
            _ => format!("{name}-"),
        },
    };
    let mut metadata = json!({"generateName": prefix});
    for field in ["labels", "annotations", "ownerReferences"] {
        if let Some(value) = old["metadata"].get(field) {
            metadata[field] = value.clone();
        }
    }
    let mut spec = old["spec"].clone();
    spec.as_object_mut().map(|s| s.remove("nodeName"));
    let created = store.create(&PODS, namespace, born.shape(json!({"metadata": metadata, "spec": spec})))?;
    Ok((*created).clone())
}

async fn processes(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(state.runtime.processes_json())
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    let hooks = &state.hooks;
    let forwards = state.runtime.port_forwards().stats();
    Json(json!({
        "portForwards": forwards["portForwards"],
        "portForwardsByUser": forwards["portForwardsByUser"],
        "portForwardUpgradesTotal": forwards["portForwardUpgradesTotal"],
        "openWatches": hooks.open_watches.load(Ordering::Relaxed),
        "watchRequests": hooks.watch_requests.load(Ordering::Relaxed),
        "listRequests": hooks.list_requests.load(Ordering::Relaxed),
        "execSessions": state.runtime.live_exec_sessions(),
        "execSessionsTotal": state.runtime.exec_sessions_total(),
        "logFollows": state.logs.open_follows(),
        "resourceVersion": state.store.current_rv().to_string(),
    }))
}
