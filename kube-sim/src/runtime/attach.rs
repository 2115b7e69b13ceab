//! Containers' main processes, which `attach` connects to. One per container, started on the
//! first attach and shared by every later one; detaching never ends it (that is real
//! behaviour), only pod deletion, a container restart or shutdown does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use axum::extract::ws::WebSocket;
use kubemux_protocol::channel::ChannelProtocol;

use super::Runtime;
use super::options::{StreamOptions, container_spec};
use super::output::OutputHub;
use super::process::{ExitInfo, PtyControl, Running, SpawnError, launch};
use super::registry::{ProcessKind, StdinLog};
use super::remotecommand::{self, ProcessPlan, SessionPlan, StreamTarget, connected_frame};
use super::ws::Connection;

/// The annotation that sets the main command (a JSON array of strings).
pub(crate) const MAIN_COMMAND_ANNOTATION: &str = "kube-sim/main-command";

/// What a container runs when the pod does not say: a heartbeat line every second, so an
/// attacher that sends nothing still sees output produced after it attached, and an echo of
/// every input line, so an attacher that types sees an answer.
pub(crate) fn default_main_command() -> Vec<String> {
    let script = "i=0; while :; do i=$((i+1)); echo \"main: tick $i\"; sleep 1; done & \
                  while IFS= read -r line; do echo \"main: read $line\"; done";
    vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]
}

/// The main command from the pod's annotation, or the default. A malformed annotation is the
/// default too: the pod was accepted, so the simulator runs something sensible.
pub(crate) fn main_command(pod: &Value) -> Vec<String> {
    super::options::annotation(pod, MAIN_COMMAND_ANNOTATION)
        .and_then(|raw| serde_json::from_str::<Vec<String>>(raw).ok())
        .filter(|argv| !argv.is_empty())
        .unwrap_or_else(default_main_command)
}

/// One running main process.
pub(crate) struct MainProcess {
    uid: String,
    /// Output, to subscribe to.
    pub hub: Arc<OutputHub>,
    /// Its stdin, open for its whole life (attachers clone the sender).
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Its terminal, if it has one.
    pub pty: Option<Arc<PtyControl>>,
    /// Its exit.
    pub exit: watch::Receiver<Option<ExitInfo>>,
    /// Everything attachers wrote to it.
    pub stdin_log: Arc<StdinLog>,
    /// argv.
    pub command: Vec<String>,
}

type ContainerKey = (String, String, String);

/// See the module docs.
#[derive(Default)]
pub(crate) struct MainProcesses {
    mains: Mutex<HashMap<ContainerKey, Arc<MainProcess>>>,
}

impl MainProcesses {
    fn lock(&self) -> MutexGuard<'_, HashMap<ContainerKey, Arc<MainProcess>>> {
        self.mains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running main process of a container, started with `start` if there is none (or
    /// the previous one exited, or belonged to an earlier pod with the same name).
    ///
    /// `start` runs under the lock on purpose: two attaches racing on a fresh container must
    /// end up on the same process. Starting is a fork and exec, never an await.
    pub fn get_or_start(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        uid: &str,
        command: Vec<String>,
        start: impl FnOnce(Arc<StdinLog>) -> Result<Running, SpawnError>,
    ) -> Result<Arc<MainProcess>, SpawnError> {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        let mut mains = self.lock();
        if let Some(main) = mains.get(&key)
            && main.uid == uid
            && main.exit.borrow().is_none()
        {
            return Ok(main.clone());
        }
        let log = Arc::new(StdinLog::default());
        let running = start(log.clone())?;
        let main = Arc::new(MainProcess {
            uid: uid.to_owned(),
            hub: running.hub,
            stdin: running.stdin,
            pty: running.pty,
            exit: running.exit,
            stdin_log: log,
            command,
        });
        // The initial listener is not needed: attachers subscribe when they come.
        drop(running.output);
        mains.insert(key, main.clone());
        Ok(main)
    }

    /// Forgets the main processes of a pod incarnation (or one container of it); their
    /// process groups are killed by the caller.
    pub fn forget_owned_by(&self, uid: &str, container: Option<&str>) {
        let removed: Vec<Arc<MainProcess>> = {
            let mut mains = self.lock();
            let keys: Vec<ContainerKey> = mains
                .iter()
                .filter(|((_, _, c), m)| m.uid == uid && container.is_none_or(|want| want == c))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| mains.remove(k)).collect()
        };
        drop(removed);
    }

    /// Forgets everything (shutdown).
    pub fn clear(&self) {
        let removed: Vec<_> = self.lock().drain().collect();
        drop(removed);
    }
}

/// Prepares an attach to `container` of `pod`. The main process runs under a PTY when the
/// container spec says `tty: true`, or, when the spec is silent, when the first attacher
/// asks for a terminal.
pub(crate) fn plan(
    runtime: &Runtime,
    pod: &Value,
    namespace: &str,
    name: &str,
    container: String,
    options: StreamOptions,
    protocol: ChannelProtocol,
) -> SessionPlan {
    let tty = container_spec(pod, &container).and_then(|c| c.get("tty")).and_then(Value::as_bool).unwrap_or(options.tty);
    // A main process keeps all three streams: attachers come and go.
    let process = ProcessPlan { argv: main_command(pod), tty, streams: [true; 3], kind: ProcessKind::Attach };
    let (info, spec) = process.describe(runtime, pod, namespace, name, container);
    SessionPlan { protocol, options, info, spec }
}

/// Runs an upgraded attach session until the client detaches or the main process exits.
pub(crate) async fn run(runtime: Arc<Runtime>, socket: WebSocket, plan: SessionPlan) {
    let SessionPlan { protocol, options, info, spec } = plan;
    let stop = runtime.stop.clone();
    let conn = Connection::start(socket, stop.clone());
    if !conn.send(connected_frame(protocol, options.stdout, options.stderr)).await {
        conn.abandon().await;
        return;
    }
    let (namespace, pod, container, uid) = (info.namespace.clone(), info.pod.clone(), info.container.clone(), info.uid.clone());
    let command = info.command.clone();
    let registry = runtime.registry.clone();
    let started = runtime.mains.get_or_start(&namespace, &pod, &container, &uid, command.clone(), |log| {
        launch(&registry, info, spec, Some(log), &stop)
    });
    let main = match started {
        Ok(main) => main,
        Err(error) => {
            remotecommand::fail(conn, protocol, &error.message(), &command).await;
            return;
        }
    };
    if runtime.pods.is_deleted(&uid) {
        runtime.mains.forget_owned_by(&uid, None);
        runtime.registry.kill_owned_by(&uid, None);
    }
    let target = StreamTarget {
        protocol,
        stdout: options.stdout,
        stderr: options.stderr,
        stdin: main.stdin.clone().filter(|_| options.stdin),
        stdin_log: Some(main.stdin_log.clone()),
        pty: main.pty.clone().filter(|_| options.tty),
        output: main.hub.subscribe(),
        exit: main.exit.clone(),
        command: main.command.clone(),
    };
    let ending = remotecommand::run(conn, target, stop).await;
    tracing::debug!(?ending, "attach session ended");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::runtime::process::{LaunchSpec, container_env, launch};
    use crate::runtime::registry::{ProcessInfo, ProcessKind, ProcessRegistry};

    #[test]
    fn main_command_from_annotation() {
        let pod = json!({"metadata": {"annotations": {MAIN_COMMAND_ANNOTATION: "[\"cat\"]"}}});
        assert_eq!(main_command(&pod), ["cat"]);
        let bad = json!({"metadata": {"annotations": {MAIN_COMMAND_ANNOTATION: "cat"}}});
        assert_eq!(main_command(&bad), default_main_command());
        assert_eq!(main_command(&json!({})), default_main_command());
    }

    #[tokio::test]
    async fn attachers_share_one_main_process() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        let mains = MainProcesses::default();
        let stop = CancellationToken::new();
        let start = |log: Arc<StdinLog>| {
            let info = ProcessInfo {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: "u".into(),
                container: "c".into(),
                command: default_main_command(),
                tty: false,
                kind: ProcessKind::Attach,
            };
            let spec = LaunchSpec {
                argv: default_main_command(),
                cwd: dir.path().to_owned(),
                env: container_env("p", None, dir.path(), false),
                tty: false,
                stdin: true,
                stdout: true,
                stderr: true,
                missing: vec![],
            };
            launch(&registry, info, spec, Some(log), &stop)
        };
        let first = mains.get_or_start("ns", "p", "c", "u", default_main_command(), start).unwrap();
        let again = mains
            .get_or_start("ns", "p", "c", "u", vec![], |_| unreachable!("must reuse the running process"))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // A late attacher sees output produced after it attached.
        let mut output = first.hub.subscribe();
        let chunk = tokio::time::timeout(Duration::from_secs(5), output.recv()).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&chunk.data).contains("main: "));
        assert_eq!(registry.to_json()[0]["kind"], "attach");
        assert_eq!(registry.to_json()[0]["stdinBytes"], 0);
        mains.forget_owned_by("u", None);
        registry.stop();
        let mut exit = first.exit.clone();
        tokio::time::timeout(Duration::from_secs(5), exit.wait_for(Option::is_some)).await.unwrap().unwrap();
    }
}
