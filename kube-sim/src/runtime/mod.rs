//! The simulated node: real processes for `exec` and `attach`, real TCP listeners behind
//! `portforward`, and a kubelet that follows pod events to start and stop them.
//!
//! It reproduces what a real cluster does, including what surprises people (reference
//! `exec-portforward-protocol.md` §4): when an exec client goes away, a TTY process is not
//! killed and gets no hangup, and a piped one only reads EOF on stdin. Processes end by
//! themselves, when their pod is deleted or their container restarts, or on
//! [`Runtime::shutdown`], which SIGKILLs every process group the simulator started.
//!
//! Code map:
//! - [`options`]: query parsing and pre-upgrade validation (pure).
//! - [`ws`]: subprotocol negotiation and the single writer task of each socket.
//! - [`remotecommand`]: the exec/attach channel session; [`exec`] and [`attach`] set it up.
//! - [`process`]: starting processes under a PTY or on pipes; [`output`] fans their output
//!   out; [`registry`] tracks them until they are reaped.
//! - [`portforward`]: the legacy port-forward channel session; [`spdy_forward`]: the SPDY/3.1
//!   session kubectl speaks (WebSocket tunnel or `Upgrade: SPDY/3.1`); [`forwards`]: the open
//!   SPDY forwards and their fault hooks.
//! - [`kubelet`]: per-pod echo listeners and container lifecycles.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use kubemux_protocol::channel::ChannelProtocol;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::SimState;
use crate::resources::PODS;
use crate::status::ApiError;
use crate::store::{Event, EventType};

mod attach;
mod exec;
pub mod forwards;
mod kubelet;
mod options;
pub(crate) use options::query_pairs;
mod output;
mod portforward;
mod process;
mod registry;
mod remotecommand;
mod spdy_forward;
mod ws;

/// Processes, sandboxes and pod port listeners of the simulated node.
pub struct Runtime {
    /// Per-container working directories live under here.
    sandbox_root: PathBuf,
    /// Cancelled by [`Runtime::shutdown`] or when the simulator's token is; every task of the
    /// runtime observes it.
    stop: CancellationToken,
    registry: Arc<registry::ProcessRegistry>,
    pods: kubelet::PodTable,
    forwards: Arc<forwards::PortForwards>,
    mains: attach::MainProcesses,
    live_exec: AtomicUsize,
    exec_total: AtomicU64,
}

/// Which streaming subresource a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `pods/exec`: run a new process in a container.
    Exec,
    /// `pods/attach`: connect to a container's main process.
    Attach,
    /// `pods/portforward`: reach the pod's ports.
    PortForward,
}

impl Runtime {
    /// A runtime whose sandboxes go under `sandbox_root` and which stops with `shutdown`.
    pub fn new(sandbox_root: PathBuf, shutdown: CancellationToken) -> Runtime {
        Runtime {
            sandbox_root,
            stop: shutdown.child_token(),
            registry: Arc::default(),
            pods: kubelet::PodTable::default(),
            forwards: Arc::default(),
            mains: attach::MainProcesses::default(),
            live_exec: AtomicUsize::new(0),
            exec_total: AtomicU64::new(0),
        }
    }

    /// The simulated kubelet, spawned once by `Sim::start`. Follows pod events from the store
    /// (and resyncs from a full list when it lags behind): runs an echo server on
    /// `127.0.0.1:0` per container port of every live pod; when a pod is deleted (or a
    /// container restarts) stops its listeners, ends their connections and SIGKILLs the
    /// process groups of its exec and attach processes. Ends, shutting the runtime down,
    /// when the shutdown token is cancelled.
    pub async fn kubelet(self: Arc<Self>, state: Arc<SimState>) {
        // Subscribe before listing, so no change falls between the two.
        let mut events = state.store.subscribe_events();
        self.resync(&state);
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if event.resource.is_pods() => self.apply(&event),
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "kubelet missed pod events; resyncing from a list");
                    self.resync(&state);
                }
                Err(RecvError::Closed) => {
                    self.stop.cancelled().await;
                    break;
                }
            }
        }
        self.shutdown();
    }

    /// Synchronous and idempotent: SIGKILLs every process group the simulator started, stops
    /// every listener, and refuses new processes.
    pub fn shutdown(&self) {
        self.registry.stop();
        self.stop.cancel();
        self.pods.stop_all();
        self.mains.clear();
    }

    /// For `GET /_sim/processes`: live (not yet reaped) processes, each
    /// `{"pid", "namespace", "pod", "container", "command", "tty", "kind": "exec"|"attach"}`;
    /// attach entries (containers' main processes) add `"stdinBytes"`, the number of bytes
    /// attachers wrote to them, and `"stdinTail"`, the last 4 KiB of those bytes.
    pub fn processes_json(&self) -> Value {
        self.registry.to_json()
    }

    /// The pod port listeners, each `{"namespace", "pod", "uid", "container",
    /// "containerPort", "address"}`.
    pub fn listeners_json(&self) -> Value {
        self.pods.to_json()
    }

    /// Open SPDY port-forwards and their fault hooks (`/_sim/portforward`).
    pub fn port_forwards(&self) -> &forwards::PortForwards {
        &self.forwards
    }

    /// Exec sessions whose client is still connected, for `/_sim/stats`.
    pub fn live_exec_sessions(&self) -> usize {
        self.live_exec.load(Ordering::Relaxed)
    }

    /// Exec sessions upgraded since the start, for `/_sim/stats`.
    pub fn exec_sessions_total(&self) -> u64 {
        self.exec_total.load(Ordering::Relaxed)
    }

    /// `<sandbox_root>/<ns>/<pod>/<container>`.
    pub(crate) fn sandbox_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.sandbox_root.join(path_component(namespace)).join(path_component(pod)).join(path_component(container))
    }

    fn apply(&self, event: &Event) {
        match event.kind {
            EventType::Added | EventType::Modified => self.ensure_pod(&event.object),
            EventType::Deleted => {
                let uid = options::pod_uid(&event.object);
                let stops = self.pods.delete_pod(&event.namespace, &event.name, uid);
                self.kill(stops);
            }
        }
    }

    fn resync(&self, state: &SimState) {
        let (_, pods) = state.store.list(&PODS, None);
        let stops = self.pods.resync(&pods, &self.stop);
        self.kill(stops);
    }

    /// Makes sure a pod's listeners exist (and restarted containers are replaced).
    fn ensure_pod(&self, pod: &Value) {
        let stops = self.pods.sync_pod(pod, &self.stop);
        self.kill(stops);
    }

    /// The containers are gone: so are their processes.
    fn kill(&self, stops: Vec<kubelet::Stop>) {
        for stop in stops {
            self.mains.forget_owned_by(&stop.uid, stop.container.as_deref());
            let killed = self.registry.kill_owned_by(&stop.uid, stop.container.as_deref());
            if killed > 0 {
                tracing::debug!(uid = stop.uid, container = ?stop.container, killed, "killed the processes of a stopped container");
            }
        }
    }
}

/// A name as one directory name. Object names are validated by the store, but container
/// names come from a pod spec as written, and must never lead out of the sandbox root.
fn path_component(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if safe.is_empty() || safe.starts_with('.') { format!("_{safe}") } else { safe }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Nothing the runtime started may outlive it.
        self.shutdown();
    }
}

/// Serves `GET /api/v1/namespaces/{ns}/pods/{pod}/{exec|attach|portforward}`; the router
/// calls it after authentication and authorization. Validates like the API server (query,
/// pod, container, phase, upgrade, subprotocol; each failure a `Status` response), then
/// upgrades to a WebSocket and runs the session. A port-forward that asks for SPDY (the
/// `SPDY/3.1+portforward.k8s.io` tunnel, or `POST` with `Upgrade: SPDY/3.1`) goes to the
/// SPDY session instead.
pub async fn serve(state: Arc<SimState>, sub: Subresource, namespace: String, pod: String, request: Request) -> Response {
    match handshake(&state, sub, &namespace, &pod, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// What the query asks for.
enum Parsed {
    Streams(options::StreamOptions),
    Ports(Vec<u16>),
}

/// What a validated request asks for.
enum Requested {
    Exec(options::StreamOptions, String),
    Attach(options::StreamOptions, String),
    Ports(Vec<u16>),
}

async fn handshake(state: &Arc<SimState>, sub: Subresource, namespace: &str, name: &str, request: Request) -> Result<Response, ApiError> {
    // The API server's order: options, then the pod, then the container and its phase, and
    // only then the upgrade itself.
    let user = crate::auth::authenticate(&state.users, request.headers()).map(|i| i.name().to_owned()).unwrap_or_default();
    if sub == Subresource::PortForward
        && let Some(transport) = spdy_forward::requested(request.headers())
    {
        // kubectl's SPDY (tunnelled or not) names its ports per stream, not in the query.
        let pod = state.store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
        return spdy_forward::upgrade(state.runtime.clone(), request, transport, pod, namespace, name, user).await;
    }
    let query = request.uri().query().unwrap_or("");
    let parsed = match sub {
        Subresource::Exec => Parsed::Streams(options::parse_stream_options(query, true)?),
        Subresource::Attach => Parsed::Streams(options::parse_stream_options(query, false)?),
        Subresource::PortForward => Parsed::Ports(options::parse_ports(query)?),
    };
    let pod = state.store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
    let requested = match parsed {
        Parsed::Ports(ports) => Requested::Ports(ports),
        Parsed::Streams(opts) => {
            let container = options::resolve_container(&pod, name, opts.container.as_deref())?;
            if sub == Subresource::Exec {
                options::check_running(&pod, "exec into")?;
                Requested::Exec(opts, container)
            } else {
                options::check_running(&pod, "attach to")?;
                Requested::Attach(opts, container)
            }
        }
    };

    let (mut parts, _body) = request.into_parts();
    let mut upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| ApiError::bad_request("Upgrade request required"))?;
    let (supported, unnamed): (&[ChannelProtocol], ChannelProtocol) = match sub {
        Subresource::PortForward => (&ChannelProtocol::PORT_FORWARD, ChannelProtocol::V4),
        Subresource::Exec | Subresource::Attach => (&ChannelProtocol::ALL, ChannelProtocol::V1),
    };
    // From the header itself, in the client's order: axum's `requested_protocols()` is a sorted
    // set, which would answer v4 to kube's "v5.channel.k8s.io, v4.channel.k8s.io".
    let offered: Vec<String> = parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let negotiated = ws::negotiate(offered.iter().map(String::as_str), supported, unnamed).map_err(ApiError::bad_request)?;
    if let Some(header) = negotiated.header() {
        // Not `protocols()`: there the server's order would win, in Kubernetes the client's does.
        upgrade.set_selected_protocol(header);
    }
    let protocol = negotiated.protocol();

    let runtime = state.runtime.clone();
    Ok(match requested {
        Requested::Exec(opts, container) => {
            let plan = exec::plan(&runtime, &pod, namespace, name, container, opts, protocol);
            upgrade.on_upgrade(move |socket| exec::run(runtime, socket, plan))
        }
        Requested::Attach(opts, container) => {
            let plan = attach::plan(&runtime, &pod, namespace, name, container, opts, protocol);
            upgrade.on_upgrade(move |socket| attach::run(runtime, socket, plan))
        }
        Requested::Ports(ports) => {
            let plan = portforward::plan(&runtime, &pod, namespace, name, &ports, protocol, user);
            upgrade.on_upgrade(move |socket| portforward::run(runtime, socket, plan))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_dirs_stay_under_the_root() {
        let runtime = Runtime::new(PathBuf::from("/sandbox"), CancellationToken::new());
        assert_eq!(runtime.sandbox_dir("default", "web-0", "app"), PathBuf::from("/sandbox/default/web-0/app"));
        assert_eq!(runtime.sandbox_dir("default", "web-0", "../../etc"), PathBuf::from("/sandbox/default/web-0/_.._.._etc"));
        assert_eq!(runtime.sandbox_dir("default", "web-0", ".."), PathBuf::from("/sandbox/default/web-0/_.."));
        assert_eq!(runtime.sandbox_dir("default", "web-0", ""), PathBuf::from("/sandbox/default/web-0/_"));
    }
}
