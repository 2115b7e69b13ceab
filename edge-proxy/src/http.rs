//! The plain HTTP endpoints: `/clusters`, `/healthz`, `/readyz`, `/metrics`, `/config/status`,
//! `/config/check`, `/forwards`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::clusters::Health;

/// `GET /clusters`: `[{"name","status","version"}]`.
pub async fn clusters(State(app): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = app
        .snapshot()
        .clusters
        .iter()
        .map(|c| {
            let (health, version) = c.health();
            json!({"name": c.name, "status": health, "version": version})
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /healthz`: the process is serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 503 from the moment a shutdown starts (the drain); otherwise ready once every cluster the proxy started with has been checked at least
/// once (a cluster being down does not make the proxy unready: its other clusters still work;
/// nor does a cluster a reload adds, which is checked at once but must not take a serving
/// replica out of its load balancer).
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: this proxy is shutting down\n").into_response();
    }
    let snapshot = app.snapshot();
    let pending: Vec<&str> = if app.live.checked() { Vec::new() } else { snapshot.clusters.iter().filter(|c| c.health().0 == Health::Unknown).map(|c| c.name.as_str()).collect() };
    if pending.is_empty() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for the first health check of: {}\n", pending.join(", "))).into_response()
    }
}

/// `GET /config/status`: the generation in force, when it was loaded, the last reload's
/// result and error, and what needs a restart.
pub async fn config_status(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(app.live.status())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render()).into_response()
}

/// `POST /config/check`: what a reload would change now, changing nothing (a dry run of the
/// config file as it is on disk, forwards' ports included).
pub async fn config_check(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(app.live.check().await)
}

/// `GET /forwards`: every forward with its state, reason, pod, connections and bytes.
pub async fn forwards(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(app.forwards.to_json())
}
