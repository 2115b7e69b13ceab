//! `/_sim/portforward`: look at open SPDY port-forwards and provoke what kubelets and load
//! balancers do to them (documented in `kube-sim/README.md`).
//!
//! - `GET /_sim/portforward`: open connections and stream pairs, and the faults in force.
//! - `POST /_sim/portforward/cut[?namespace=&pod=&scope=streams|connections]`: reset the
//!   matching stream pairs (RST_STREAM, pod connection closed; the default), or drop the
//!   matching connections without a word. Answers `{"cut": N}`.
//! - `POST /_sim/portforward/blackhole[?namespace=&pod=]`: the matching open connections of the
//!   channel protocol go silent (open, but nothing read, no pong, nothing written). Answers
//!   `{"blackholed": N}`.
//! - `POST /_sim/portforward/idle-timeout?seconds=N`: reset stream pairs (and channel-protocol
//!   connections) idle for N seconds (0 turns it off); any frame, a ping too, is activity.
//! - `POST /_sim/portforward/withhold-replies?count=N`: the next N SYN_STREAMs get no SYN_REPLY.
//! - `POST /_sim/portforward/refuse?port=P[&namespace=&pod=]`: connections to port P are
//!   refused (the kubelet's error on the error stream); `DELETE` lifts every refusal.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SimState;
use crate::runtime::forwards::PodFilter;
use crate::status::ApiError;

/// The `/_sim/portforward` routes.
pub(super) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/", get(list))
        .route("/cut", post(cut))
        .route("/blackhole", post(blackhole))
        .route("/idle-timeout", post(idle_timeout))
        .route("/withhold-replies", post(withhold_replies))
        .route("/refuse", post(refuse).delete(clear_refusals))
}

async fn list(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(state.runtime.port_forwards().to_json())
}

#[derive(Deserialize)]
struct CutQuery {
    namespace: Option<String>,
    pod: Option<String>,
    scope: Option<String>,
}

async fn cut(State(state): State<Arc<SimState>>, query: Result<Query<CutQuery>, QueryRejection>) -> Response {
    let Ok(Query(CutQuery { namespace, pod, scope })) = query else {
        return ApiError::bad_request("expected ?namespace=&pod=&scope=streams|connections").into_response();
    };
    let filter = PodFilter { namespace, pod };
    let forwards = state.runtime.port_forwards();
    let cut = match scope.as_deref() {
        None | Some("streams") => forwards.cut_streams(&filter),
        Some("connections") => forwards.cut_connections(&filter),
        Some(_) => return ApiError::bad_request("scope must be streams or connections").into_response(),
    };
    Json(json!({"cut": cut})).into_response()
}

#[derive(Deserialize)]
struct FilterQuery {
    namespace: Option<String>,
    pod: Option<String>,
}

async fn blackhole(State(state): State<Arc<SimState>>, query: Result<Query<FilterQuery>, QueryRejection>) -> Response {
    let Ok(Query(FilterQuery { namespace, pod })) = query else {
        return ApiError::bad_request("expected ?namespace=&pod=").into_response();
    };
    Json(json!({"blackholed": state.runtime.port_forwards().blackhole(&PodFilter { namespace, pod })})).into_response()
}

#[derive(Deserialize)]
struct SecondsQuery {
    seconds: f64,
}

async fn idle_timeout(State(state): State<Arc<SimState>>, query: Result<Query<SecondsQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(SecondsQuery { seconds })) if (0.0..=86_400.0).contains(&seconds) => {
            let timeout = (seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
            state.runtime.port_forwards().set_idle_timeout(timeout);
            Json(json!({"idleTimeoutSeconds": seconds})).into_response()
        }
        _ => ApiError::bad_request("expected ?seconds=N with 0 <= N <= 86400 (0 turns it off)").into_response(),
    }
}

#[derive(Deserialize)]
struct CountQuery {
    count: u32,
}

async fn withhold_replies(State(state): State<Arc<SimState>>, query: Result<Query<CountQuery>, QueryRejection>) -> Response {
    let Ok(Query(CountQuery { count })) = query else {
        return ApiError::bad_request("expected ?count=N").into_response();
    };
    state.runtime.port_forwards().withhold_replies(count);
    Json(json!({"withheldReplies": count})).into_response()
}

#[derive(Deserialize)]
struct RefuseQuery {
    port: u16,
    namespace: Option<String>,
    pod: Option<String>,
}

async fn refuse(State(state): State<Arc<SimState>>, query: Result<Query<RefuseQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(RefuseQuery { port, namespace, pod })) if port > 0 => {
            state.runtime.port_forwards().refuse(PodFilter { namespace: namespace.clone(), pod: pod.clone() }, port);
            Json(json!({"port": port, "namespace": namespace, "pod": pod})).into_response()
        }
        _ => ApiError::bad_request("expected ?port=P (1-65535) and optionally namespace and pod").into_response(),
    }
}

async fn clear_refusals(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.runtime.port_forwards().clear_refusals();
    Json(json!({"refused": []}))
}
