//! TEMPORARY interface stub, replaced by the runtime implementation.
#![allow(missing_docs, unused)]
use std::path::PathBuf;
use std::sync::Arc;
use axum::extract::Request;
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use crate::SimState;

pub struct Runtime;
impl Runtime {
    pub fn new(sandbox_root: PathBuf, shutdown: CancellationToken) -> Runtime { Runtime }
    pub async fn kubelet(self: Arc<Self>, state: Arc<SimState>) {}
    pub fn shutdown(&self) {}
    pub fn processes_json(&self) -> serde_json::Value { serde_json::json!([]) }
    pub fn live_exec_sessions(&self) -> usize { 0 }
}
pub enum Subresource { Exec, Attach, PortForward }
pub async fn serve(state: Arc<SimState>, sub: Subresource, namespace: String, pod: String, request: Request) -> Response { todo!() }
