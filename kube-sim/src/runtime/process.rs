//! Starting real processes for `exec` and `attach`, the way a container runtime would:
//! under a PTY for `tty=true` (portable-pty makes the child a session leader, so its pid is
//! its process group), on pipes in a process group of its own otherwise.
//!
//! Blocking PTY work (reads, writes, `wait`) runs on plain threads rather than
//! `spawn_blocking`: those threads may live as long as an orphaned shell, and a runtime
//! waits for its blocking pool when it shuts down.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kubemux_protocol::channel::{ExecOutcome, STDERR, STDOUT, TerminalSize};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::output::{Chunk, OutputHub};
use super::registry::{ProcessInfo, ProcessRegistry, StdinLog, kill_group};

/// Queued stdin chunks per process before a writer waits for the process to read.
const STDIN_QUEUE: usize = 64;
/// Read buffer for process output.
const READ_BUFFER: usize = 8192;
/// The terminal size a PTY starts with until the client's first resize arrives.
pub(crate) const DEFAULT_SIZE: TerminalSize = TerminalSize { width: 80, height: 24 };

/// What to start and how.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec {
    /// argv; argv\[0\] is looked up in `PATH` unless it contains a slash.
    pub argv: Vec<String>,
    /// Working directory (the container's sandbox directory; created if missing).
    pub cwd: PathBuf,
    /// The whole environment (nothing is inherited implicitly).
    pub env: Vec<(String, String)>,
    /// Run under a PTY.
    pub tty: bool,
    /// Without a PTY: pipe stdin (otherwise `/dev/null`).
    pub stdin: bool,
    /// Without a PTY: pipe stdout (otherwise discarded).
    pub stdout: bool,
    /// Without a PTY: pipe stderr (otherwise discarded).
    pub stderr: bool,
    /// Binaries the pod declares absent (`kube-sim/missing-binaries`).
    pub missing: Vec<String>,
}

/// Why a process could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpawnError {
    /// The runtime could not start the binary; the text is runc's reason, e.g.
    /// `exec: "bash": executable file not found in $PATH`.
    #[error("{0}")]
    Start(String),
    /// Anything else (PTY allocation, sandbox directory, shutdown in progress).
    #[error("{0}")]
    Failed(String),
}

impl SpawnError {
    /// The message a real cluster reports for this failure: containerd's wording for
    /// start failures.
    pub fn message(&self) -> String {
        match self {
            SpawnError::Start(reason) => containerd_start_error(reason),
            SpawnError::Failed(message) => message.clone(),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitInfo {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// The exit status could not be read.
    Unknown,
}

impl ExitInfo {
    fn from_std(status: std::process::ExitStatus) -> ExitInfo {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitInfo::Code(code),
            (None, Some(signal)) => ExitInfo::Signal(signal),
            (None, None) => ExitInfo::Unknown,
        }
    }

    /// The channel-3 outcome; a signal `s` is exit code `128 + s`, as a shell reports it.
    pub fn outcome(self) -> ExecOutcome {
        match self {
            ExitInfo::Code(0) => ExecOutcome::Success,
            ExitInfo::Code(code) => ExecOutcome::ExitCode(code),
            ExitInfo::Signal(signal) => ExecOutcome::ExitCode(128 + signal),
            ExitInfo::Unknown => ExecOutcome::internal_error("the exit status of the process could not be read"),
        }
    }
}

/// A PTY master, shared by the sessions that may resize it and the registry that keeps it open.
pub(crate) struct PtyControl {
    master: Mutex<Box<dyn MasterPty + Send>>,
}

impl PtyControl {
    /// Resizes the terminal (the process gets SIGWINCH).
    pub fn resize(&self, size: TerminalSize) -> bool {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        master.resize(PtySize { rows: size.height, cols: size.width, pixel_width: 0, pixel_height: 0 }).is_ok()
    }
}

/// What the registry holds so that a TTY process keeps its terminal until it exits: the
/// master, and a handle on the stdin writer (dropping portable-pty's writer types an EOF
/// into the terminal, which Kubernetes never does).
pub(crate) struct PtyKeepAlive {
    _control: Arc<PtyControl>,
    _stdin: mpsc::Sender<Bytes>,
}

/// A started, registered process.
pub(crate) struct Running {
    /// Process id, also its process group id.
    pub pid: u32,
    /// Its output, for later listeners (attach).
    pub hub: Arc<OutputHub>,
    /// A listener subscribed before the first byte was read, so nothing is missed.
    pub output: mpsc::Receiver<Chunk>,
    /// Where stdin goes (`None` when stdin is not connected). Dropping the last sender of a
    /// pipe is the process's EOF; a PTY's writer is also held by the registry and never closes.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// The PTY, for resizes.
    pub pty: Option<Arc<PtyControl>>,
    /// Becomes `Some` once the process has exited and been reaped.
    pub exit: watch::Receiver<Option<ExitInfo>>,
}

/// The runc-through-containerd message for a process that could not be started.
pub(crate) fn containerd_start_error(reason: &str) -> String {
    let exec_id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    format!(
        "error executing command in container: failed to exec in container: failed to start exec \"{exec_id}\": OCI runtime exec failed: exec failed: unable to start container process: {reason}: unknown"
    )
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why runc would fail to start `argv0`, if it would: declared missing by the pod (by name
/// or basename), absent from `PATH`, or a path that does not exist.
pub(crate) fn start_failure(argv0: &str, declared_missing: &[String], path: Option<&str>, cwd: &Path) -> Option<String> {
    let basename = argv0.rsplit('/').next().unwrap_or(argv0);
    let declared = declared_missing.iter().any(|m| m == argv0 || m == basename);
    if argv0.is_empty() {
        return Some("exec: \"\": executable file not found in $PATH".to_owned());
    }
    if argv0.contains('/') {
        let target = cwd.join(argv0);
        if declared || !target.exists() {
            return Some(format!("exec: \"{argv0}\": stat {argv0}: no such file or directory"));
        }
        if !is_executable_file(&target) {
            return Some(format!("exec: \"{argv0}\": permission denied"));
        }
        return None;
    }
    // Go's LookPath: an empty PATH entry means the working directory.
    let found = path.unwrap_or("").split(':').any(|dir| is_executable_file(&cwd.join(dir).join(argv0)));
    if declared || !found { Some(format!("exec: \"{argv0}\": executable file not found in $PATH")) } else { None }
}

/// Parses `kube-sim/missing-binaries: bash,zsh`.
pub(crate) fn declared_missing(annotation: Option<&str>) -> Vec<String> {
    annotation.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The environment of a container process: `PATH` from the simulator, `HOME` in the
/// sandbox, `HOSTNAME` as the pod name, `TERM=xterm` under a PTY (as containerd sets it),
/// and the literal `env` values of the container spec.
pub(crate) fn container_env(pod_name: &str, container_spec: Option<&Value>, home: &Path, tty: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())),
        ("HOSTNAME".to_owned(), pod_name.to_owned()),
        ("HOME".to_owned(), home.to_string_lossy().into_owned()),
    ];
    if tty {
        env.push(("TERM".to_owned(), "xterm".to_owned()));
    }
    let literals = container_spec.and_then(|c| c.get("env")).and_then(Value::as_array).into_iter().flatten();
    for var in literals {
        if let (Some(name), Some(value)) = (var.get("name").and_then(Value::as_str), var.get("value").and_then(Value::as_str))
            && name != "HOME"
            && name != "PATH"
        {
            env.push((name.to_owned(), value.to_owned()));
        }
    }
    env
}

/// Starts `spec` and registers it. Must run inside a tokio runtime (pipes use tokio tasks).
pub(crate) fn launch(
    registry: &Arc<ProcessRegistry>,
    info: ProcessInfo,
    spec: LaunchSpec,
    stdin_log: Option<Arc<StdinLog>>,
    stop: &CancellationToken,
) -> Result<Running, SpawnError> {
    std::fs::create_dir_all(&spec.cwd)
        .map_err(|e| SpawnError::Failed(format!("creating the container sandbox {}: {e}", spec.cwd.display())))?;
    let path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let argv0 = spec.argv.first().map(String::as_str).unwrap_or("");
    if let Some(reason) = start_failure(argv0, &spec.missing, path, &spec.cwd) {
        return Err(SpawnError::Start(reason));
    }
    if spec.tty { launch_pty(registry, info, spec, stdin_log) } else { launch_pipes(registry, info, spec, stdin_log, stop) }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(body).map(drop)
}

fn launch_pty(
    registry: &Arc<ProcessRegistry>,
    info: ProcessInfo,
    spec: LaunchSpec,
    stdin_log: Option<Arc<StdinLog>>,
) -> Result<Running, SpawnError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| SpawnError::Failed(format!("{what}: {e}"));
    let size = PtySize { rows: DEFAULT_SIZE.height, cols: DEFAULT_SIZE.width, pixel_width: 0, pixel_height: 0 };
    let pair = native_pty_system().openpty(size).map_err(|e| failed("allocating a terminal", &e))?;
    let mut cmd = CommandBuilder::from_argv(spec.argv.iter().map(OsString::from).collect());
    cmd.env_clear();
    for (key, value) in &spec.env {
        cmd.env(key, value);
    }
    cmd.cwd(&spec.cwd);
    let child = pair.slave.spawn_command(cmd).map_err(|e| SpawnError::Start(format!("exec: \"{}\": {e:#}", spec.argv[0])))?;
    // Only the child may hold the terminal's slave side: when it exits, the master reads EOF.
    drop(pair.slave);
    let Some(pid) = child.process_id() else {
        reap_on_thread(child, None);
        return Err(SpawnError::Failed("the terminal process has no pid".into()));
    };
    let master = pair.master;
    let io = master.try_clone_reader().and_then(|reader| Ok((reader, master.take_writer()?)));
    let (reader, writer) = match io {
        Ok(io) => io,
        Err(e) => {
            kill_group(pid);
            reap_on_thread(child, None);
            return Err(failed("opening the terminal", &e));
        }
    };
    let control = Arc::new(PtyControl { master: Mutex::new(master) });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
    let hub = Arc::new(OutputHub::new(1));
    let output = hub.subscribe();
    let (exit_tx, exit_rx) = watch::channel(None);
    let keep_alive = PtyKeepAlive { _control: control.clone(), _stdin: stdin_tx.clone() };
    let id = match registry.register(info, pid, Some(keep_alive), stdin_log) {
        Ok(id) => id,
        Err(stopped) => {
            reap_on_thread(child, None);
            return Err(SpawnError::Failed(stopped.to_string()));
        }
    };
    let reader_hub = hub.clone();
    let threads = spawn_thread("pty-stdin", move || write_stdin(writer, stdin_rx))
        .and_then(|()| spawn_thread("pty-output", move || read_output(reader, &reader_hub)));
    if let Err(e) = threads {
        kill_group(pid);
        reap_on_thread(child, Some((registry.clone(), id, exit_tx)));
        return Err(failed("starting terminal threads", &e));
    }
    reap_on_thread(child, Some((registry.clone(), id, exit_tx)));
    Ok(Running { pid, hub, output, stdin: Some(stdin_tx), pty: Some(control), exit: exit_rx })
}

/// Feeds stdin to the terminal until every sender is gone (the process has exited and no
/// session is left). Write errors are ignored: they only happen once the terminal is dead,
/// and ending early would drop the writer, which types an EOF.
fn write_stdin(mut writer: Box<dyn Write + Send>, mut stdin: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = stdin.blocking_recv() {
        let _ = writer.write_all(&bytes).and_then(|()| writer.flush());
    }
}

/// Reads the terminal until EOF (portable-pty maps the EIO of a closed slave to EOF).
fn read_output(mut reader: Box<dyn Read + Send>, hub: &OutputHub) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hub.publish_blocking(Chunk { channel: STDOUT, data: Bytes::copy_from_slice(&buf[..n]) }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    hub.finish_stream();
}

type Reaped = (Arc<ProcessRegistry>, u64, watch::Sender<Option<ExitInfo>>);

/// Waits for a PTY child on a thread of its own, then publishes the exit and drops the
/// registry entry (which closes the master).
fn reap_on_thread(child: Box<dyn portable_pty::Child + Send + Sync>, then: Option<Reaped>) {
    let body = move || {
        let child: Box<dyn portable_pty::Child> = child;
        // On Unix the child is a std::process::Child; its status carries the signal number.
        let exit = match child.downcast::<std::process::Child>() {
            Ok(mut child) => child.wait().map(ExitInfo::from_std).unwrap_or(ExitInfo::Unknown),
            Err(mut child) => child.wait().map(|s| ExitInfo::Code(s.exit_code() as i32)).unwrap_or(ExitInfo::Unknown),
        };
        if let Some((registry, id, exit_tx)) = then {
            // Unlisted first, so whoever sees the exit also sees the process gone.
            registry.remove(id);
            exit_tx.send_replace(Some(exit));
        }
    };
    if let Err(e) = spawn_thread("pty-wait", body) {
        tracing::error!(error = %e, "cannot start a thread to reap a terminal process");
    }
}

fn launch_pipes(
    registry: &Arc<ProcessRegistry>,
    info: ProcessInfo,
    spec: LaunchSpec,
    stdin_log: Option<Arc<StdinLog>>,
    stop: &CancellationToken,
) -> Result<Running, SpawnError> {
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        // Its own group, so pod deletion and shutdown can kill it with everything it started.
        .process_group(0)
        .stdin(piped(spec.stdin))
        .stdout(piped(spec.stdout))
        .stderr(piped(spec.stderr));
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SpawnError::Start(format!("exec: \"{}\": executable file not found in $PATH", spec.argv[0])),
        std::io::ErrorKind::PermissionDenied => SpawnError::Start(format!("exec: \"{}\": permission denied", spec.argv[0])),
        _ => SpawnError::Start(format!("exec: \"{}\": {e}", spec.argv[0])),
    })?;
    let Some(pid) = child.id() else {
        return Err(SpawnError::Failed("the process exited before it could be registered".into()));
    };
    let stdin_pipe = child.stdin.take();
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let hub = Arc::new(OutputHub::new(usize::from(stdout_pipe.is_some()) + usize::from(stderr_pipe.is_some())));
    let output = hub.subscribe();
    let (exit_tx, exit_rx) = watch::channel(None);
    let id = match registry.register(info, pid, None, stdin_log) {
        Ok(id) => id,
        Err(stopped) => {
            // Already killed; let tokio reap it.
            tokio::spawn(async move { child.wait().await });
            return Err(SpawnError::Failed(stopped.to_string()));
        }
    };
    let stdin = stdin_pipe.map(|mut pipe| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
        let stop = stop.clone();
        tokio::spawn(async move {
            // Ends when the last sender goes (client closed stdin or left): dropping the pipe
            // is the EOF the process reads.
            while let Some(bytes) = tokio::select! { _ = stop.cancelled() => None, b = rx.recv() => b } {
                let written = tokio::select! { _ = stop.cancelled() => break, r = pipe.write_all(&bytes) => r };
                if written.is_err() {
                    break;
                }
            }
        });
        tx
    });
    if let Some(pipe) = stdout_pipe {
        tokio::spawn(pump(pipe, STDOUT, hub.clone(), stop.clone()));
    }
    if let Some(pipe) = stderr_pipe {
        tokio::spawn(pump(pipe, STDERR, hub.clone(), stop.clone()));
    }
    let registry = registry.clone();
    tokio::spawn(async move {
        // Ends once the process is gone; shutdown kills the group, so this never outlives it.
        let exit = child.wait().await.map(ExitInfo::from_std).unwrap_or(ExitInfo::Unknown);
        registry.remove(id);
        exit_tx.send_replace(Some(exit));
    });
    Ok(Running { pid, hub, output, stdin, pty: None, exit: exit_rx })
}

async fn pump(mut pipe: impl AsyncRead + Unpin, channel: u8, hub: Arc<OutputHub>, stop: CancellationToken) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let read = tokio::select! { _ = stop.cancelled() => break, r = pipe.read(&mut buf) => r };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => hub.publish(Chunk { channel, data: Bytes::copy_from_slice(&buf[..n]) }).await,
        }
    }
    hub.finish_stream();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::registry::ProcessKind;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn info(tty: bool) -> ProcessInfo {
        ProcessInfo {
            namespace: "ns".into(),
            pod: "pod".into(),
            uid: "uid-1".into(),
            container: "c".into(),
            command: vec![],
            tty,
            kind: ProcessKind::Exec,
        }
    }

    fn spec(dir: &Path, argv: &[&str], tty: bool) -> LaunchSpec {
        LaunchSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: dir.join("ns/pod/c"),
            env: container_env("pod", None, &dir.join("ns/pod/c"), tty),
            tty,
            stdin: true,
            stdout: true,
            stderr: true,
            missing: vec![],
        }
    }

    /// Everything a process printed so far, read on demand.
    struct Transcript {
        seen: String,
        consumed: usize,
    }

    impl Transcript {
        fn new() -> Transcript {
            Transcript { seen: String::new(), consumed: 0 }
        }

        /// Reads output until `want` appears after what earlier calls matched, with a deadline.
        async fn expect(&mut self, output: &mut mpsc::Receiver<Chunk>, want: &str) {
            let found = tokio::time::timeout(DEADLINE, async {
                loop {
                    if let Some(at) = self.seen[self.consumed..].find(want) {
                        self.consumed += at + want.len();
                        return true;
                    }
                    match output.recv().await {
                        Some(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk.data)),
                        None => return false,
                    }
                }
            })
            .await;
            assert!(matches!(found, Ok(true)), "never saw {want:?}; got {:?}", self.seen);
        }
    }

    async fn exited(exit: &mut watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
        let got = tokio::time::timeout(DEADLINE, exit.wait_for(Option::is_some)).await.expect("process did not exit");
        got.expect("exit sender dropped").expect("checked is_some")
    }

    fn alive(pid: u32) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
    }

    #[test]
    fn start_failures_are_detected_like_runc() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(start_failure("sh", &[], Some(&path), dir.path()), None);
        assert_eq!(
            start_failure("bash", &declared_missing(Some("zsh, bash")), Some(&path), dir.path()).as_deref(),
            Some("exec: \"bash\": executable file not found in $PATH")
        );
        // Listed by basename also blocks the full path.
        assert_eq!(
            start_failure("/bin/sh", &declared_missing(Some("sh")), Some(&path), dir.path()).as_deref(),
            Some("exec: \"/bin/sh\": stat /bin/sh: no such file or directory")
        );
        assert!(start_failure("no-such-binary-kube-sim", &[], Some(&path), dir.path()).unwrap().contains("not found in $PATH"));
        assert!(start_failure("/nonexistent/x", &[], Some(&path), dir.path()).unwrap().contains("no such file"));
        let message = containerd_start_error("exec: \"bash\": executable file not found in $PATH");
        assert!(message.starts_with("error executing command in container: failed to exec in container: failed to start exec \""));
        assert!(message.ends_with("unable to start container process: exec: \"bash\": executable file not found in $PATH: unknown"));
    }

    #[test]
    fn exit_outcomes() {
        assert_eq!(ExitInfo::Code(0).outcome(), ExecOutcome::Success);
        assert_eq!(ExitInfo::Code(3).outcome(), ExecOutcome::ExitCode(3));
        assert_eq!(ExitInfo::Signal(9).outcome(), ExecOutcome::ExitCode(137));
    }

    #[tokio::test]
    async fn missing_binary_fails_before_spawning() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        let mut spec = spec(dir.path(), &["bash", "-l"], false);
        spec.missing = vec!["bash".into()];
        let err = launch(&registry, info(false), spec, None, &CancellationToken::new()).err().unwrap();
        assert_eq!(err, SpawnError::Start("exec: \"bash\": executable file not found in $PATH".into()));
        assert_eq!(registry.to_json(), serde_json::json!([]));
    }

    #[tokio::test]
    async fn pty_process_echoes_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        let mut p = launch(&registry, info(true), spec(dir.path(), &["sh"], true), None, &CancellationToken::new()).unwrap();
        assert_eq!(registry.len(), 1);
        let stdin = p.stdin.clone().unwrap();
        stdin.send(Bytes::from_static(b"echo \"[$TERM:$(pwd)]\"; stty size\n")).await.unwrap();
        let cwd = dir.path().join("ns/pod/c").canonicalize().unwrap();
        let mut transcript = Transcript::new();
        transcript.expect(&mut p.output, &format!("[xterm:{}]", cwd.display())).await;
        transcript.expect(&mut p.output, "24 80").await;
        assert!(p.pty.as_ref().unwrap().resize(TerminalSize { width: 120, height: 40 }));
        stdin.send(Bytes::from_static(b"stty size\n")).await.unwrap();
        transcript.expect(&mut p.output, "40 120").await;
        stdin.send(Bytes::from_static(b"exit 3\n")).await.unwrap();
        assert_eq!(exited(&mut p.exit).await, ExitInfo::Code(3));
        // Output ends after the exit, and the entry is gone once reaped.
        tokio::time::timeout(DEADLINE, async { while p.output.recv().await.is_some() {} }).await.unwrap();
        assert_eq!(registry.len(), 0);
    }

    /// The orphan: a TTY shell whose client is gone keeps running with its terminal open.
    #[tokio::test]
    async fn pty_process_survives_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        let p = launch(&registry, info(true), spec(dir.path(), &["sh"], true), None, &CancellationToken::new()).unwrap();
        let pid = p.pid;
        // The session goes away: its output listener and stdin handle are dropped.
        drop(p.output);
        drop(p.stdin);
        drop(p.pty);
        let mut exit = p.exit;
        assert!(tokio::time::timeout(Duration::from_millis(500), exit.wait_for(Option::is_some)).await.is_err());
        assert!(alive(pid));
        assert_eq!(registry.to_json()[0]["pid"], pid);
        registry.stop();
        assert_eq!(exited(&mut exit).await, ExitInfo::Signal(9));
        assert_eq!(registry.len(), 0);
    }

    #[tokio::test]
    async fn pipes_give_eof_when_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        let argv = ["sh", "-c", "cat; echo done >&2; exit 4"];
        let mut p = launch(&registry, info(false), spec(dir.path(), &argv, false), None, &CancellationToken::new()).unwrap();
        let stdin = p.stdin.take().unwrap();
        stdin.send(Bytes::from_static(b"hello\n")).await.unwrap();
        let first = tokio::time::timeout(DEADLINE, p.output.recv()).await.unwrap().unwrap();
        assert_eq!(first, Chunk { channel: STDOUT, data: Bytes::from_static(b"hello\n") });
        // Closing stdin is the process's EOF: cat ends and the shell exits.
        drop(stdin);
        let second = tokio::time::timeout(DEADLINE, p.output.recv()).await.unwrap().unwrap();
        assert_eq!(second, Chunk { channel: STDERR, data: Bytes::from_static(b"done\n") });
        assert_eq!(exited(&mut p.exit).await, ExitInfo::Code(4));
    }

    #[tokio::test]
    async fn stop_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ProcessRegistry::default());
        // A background grandchild in the same group, which outlives nothing.
        let argv = ["sh", "-c", "sleep 300 & echo $!; wait"];
        let mut p = launch(&registry, info(false), spec(dir.path(), &argv, false), None, &CancellationToken::new()).unwrap();
        let mut transcript = Transcript::new();
        transcript.expect(&mut p.output, "\n").await;
        let grandchild: u32 = transcript.seen.trim().parse().unwrap();
        assert!(alive(grandchild));
        registry.stop();
        registry.stop(); // idempotent
        assert_eq!(exited(&mut p.exit).await, ExitInfo::Signal(9));
        // The grandchild was killed too (it may linger as a zombie of the shell's reaper, so
        // poll its state instead of sleeping a fixed time).
        tokio::time::timeout(DEADLINE, async {
            while alive(grandchild) && !is_zombie(grandchild) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("grandchild survived");
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true)
    }
}
