//! `exec`: a new process in the container per request, under a PTY or on pipes, streamed
//! over the RemoteCommand protocol until it exits. The process belongs to the container, not
//! to the connection (reference §4): see [`super::remotecommand`].

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use kubemux_protocol::channel::ChannelProtocol;
use serde_json::Value;

use super::Runtime;
use super::options::StreamOptions;
use super::process::launch;
use super::registry::ProcessKind;
use super::remotecommand::{self, ProcessPlan, SessionPlan, StreamTarget, connected_frame};
use super::ws::Connection;

/// The annotation listing binaries the container image lacks (`bash,zsh`).
pub(crate) const MISSING_BINARIES_ANNOTATION: &str = "kube-sim/missing-binaries";

/// Prepares an exec of `options.command` in `container` of `pod`.
pub(crate) fn plan(
    runtime: &Runtime,
    pod: &Value,
    namespace: &str,
    name: &str,
    container: String,
    options: StreamOptions,
    protocol: ChannelProtocol,
) -> SessionPlan {
    let process = ProcessPlan {
        argv: options.command.clone(),
        tty: options.tty,
        streams: [options.stdin, options.stdout, options.stderr],
        kind: ProcessKind::Exec,
    };
    let (info, spec) = process.describe(runtime, pod, namespace, name, container);
    SessionPlan { protocol, options, info, spec }
}

/// Counts a session as live while the client is connected.
struct LiveSession(Arc<Runtime>);

impl LiveSession {
    fn start(runtime: Arc<Runtime>) -> LiveSession {
        runtime.exec_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.live_exec.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LiveSession(runtime)
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.live_exec.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs an upgraded exec session to its end.
pub(crate) async fn run(runtime: Arc<Runtime>, socket: WebSocket, plan: SessionPlan) {
    let _live = LiveSession::start(runtime.clone());
    let SessionPlan { protocol, options, info, spec } = plan;
    let stop = runtime.stop.clone();
    let conn = Connection::start(socket, stop.clone());
    if !conn.send(connected_frame(protocol, options.stdout, options.stderr)).await {
        conn.abandon().await;
        return;
    }
    let uid = info.uid.clone();
    let command = info.command.clone();
    let running = match launch(&runtime.registry, info, spec, None, &stop) {
        Ok(running) => running,
        Err(error) => {
            // The real API server has upgraded by now: the failure arrives as the status.
            tracing::debug!(%error, "exec failed to start");
            remotecommand::fail(conn, protocol, &error.message(), &command).await;
            return;
        }
    };
    // The pod may have been deleted while the process started: it dies with its container.
    if runtime.pods.is_deleted(&uid) {
        runtime.registry.kill_owned_by(&uid, None);
    }
    let target = StreamTarget {
        protocol,
        stdout: options.stdout,
        stderr: options.stderr,
        // Without stdin the PTY writer stays with the registry alone; it is never closed.
        stdin: running.stdin.filter(|_| options.stdin),
        stdin_log: None,
        pty: running.pty.filter(|_| options.tty),
        output: running.output,
        exit: running.exit,
        command,
    };
    let ending = remotecommand::run(conn, target, stop).await;
    tracing::debug!(?ending, pid = running.pid, "exec session ended");
}
