//! The plain HTTP endpoints: `/clusters`, `/healthz`, `/readyz`, `/metrics`.

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
        .registry
        .clusters()
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

/// `GET /readyz`: ready once every cluster has been checked at least once (a cluster being
/// down does not make the proxy unready: its other clusters still work).
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let pending: Vec<&str> = app.registry.clusters().iter().filter(|c| c.health().0 == Health::Unknown).map(|c| c.name.as_str()).collect();
    if pending.is_empty() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for the first health check of: {}\n", pending.join(", "))).into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render()).into_response()
}
