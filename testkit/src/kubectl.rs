//! kubectl driven against a server, with a kubeconfig of its own and a private cache directory.
//!
//! The kubectl tests are `#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on
//! PATH"]`: a plain `cargo test` reports them as
//! ignored (never as a silent pass), and `cargo xtask test` runs them with `--ignored` when
//! kubectl is on PATH, or when it must be there (`CI` or `KUBEMUX_REQUIRE_TOOLS=1`); otherwise
//! its summary says they were skipped. A kubectl test that runs without kubectl fails.

use std::path::PathBuf;
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::wait::within;

/// kubectl pointed at one server.
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: tempfile::NamedTempFile,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl with `kubeconfig` (YAML or JSON) as its only configuration. Fails the test when
    /// kubectl is not on PATH: a kubectl test runs only when asked for.
    pub fn new(kubeconfig: &str) -> Kubectl {
        let binary = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("kubectl")).find(|p| p.is_file()))
            .unwrap_or_else(|| panic!("kubectl is not on PATH: install it to run the kubectl tests (cargo xtask test skips them without it, except under CI or KUBEMUX_REQUIRE_TOOLS=1)"));
        let file = tempfile::Builder::new().prefix("kubemux-kubeconfig-").tempfile().expect("a temporary kubeconfig");
        std::fs::write(file.path(), kubeconfig).expect("write the kubeconfig");
        let cache = tempfile::Builder::new().prefix("kubemux-kubectl-cache-").tempdir().expect("a cache directory");
        Kubectl { binary, kubeconfig: file, cache }
    }

    /// kubectl for an anonymous user of `server`, in namespace `default`.
    pub fn for_server(server: &str) -> Kubectl {
        Kubectl::new(&format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: server\n  cluster:\n    server: {server}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: server\n  context:\n    cluster: server\n    user: nobody\n    namespace: default\ncurrent-context: server\n"
        ))
    }

    /// A kubectl command with `args`, stdout and stderr piped, killed when dropped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig.path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to completion within the deadline, feeding it `stdin` when given (then
    /// closing it: kubectl sends the remote stdin's end).
    pub async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = self.command(args);
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input).await.expect("write kubectl's stdin");
        }
        within(&format!("end of kubectl {}", args.join(" ")), child.wait_with_output()).await.expect("kubectl runs")
    }

    /// Runs kubectl and asserts it succeeded; returns stdout.
    pub async fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let output = self.run(args, stdin).await;
        assert!(output.status.success(), "kubectl {} failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// `kubectl port-forward --address 127.0.0.1 TARGET :REMOTE`, over the WebSocket tunnel
    /// (kubectl 1.31+'s default) or, with `websockets` false, over `Upgrade: SPDY/3.1`
    /// (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`). Returns kubectl (killed on drop) and the
    /// local port it printed; fails with kubectl's stderr when it does not start forwarding.
    pub async fn port_forward(&self, target: &str, remote: u16, websockets: bool) -> (tokio::process::Child, u16) {
        use tokio::io::AsyncBufReadExt as _;
        let remote = format!(":{remote}");
        let mut command = self.command(&["port-forward", "--address", "127.0.0.1", target, &remote]);
        command.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websockets { "true" } else { "false" });
        let mut child = command.spawn().expect("kubectl starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // "Forwarding from 127.0.0.1:NNNNN -> PORT"
        let line = within("kubectl's Forwarding line", lines.next_line()).await.expect("read kubectl's stdout").unwrap_or_default();
        let Some(local) = line.strip_prefix("Forwarding from 127.0.0.1:").and_then(|rest| rest.split_whitespace().next()).and_then(|p| p.parse().ok()) else {
            let output = within("kubectl to exit", child.wait_with_output()).await.expect("kubectl exits");
            panic!("kubectl port-forward did not start: {line:?}; stderr: {}", String::from_utf8_lossy(&output.stderr));
        };
        // Keep reading stdout ("Handling connection for …") so kubectl never blocks on the pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, local)
    }
}

/// Connects to a local forwarded port, writes `payload`, half-closes, and reads to the end.
pub async fn echo_through(local: u16, payload: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = within("the local connection", tokio::net::TcpStream::connect(("127.0.0.1", local))).await.expect("connect to the forwarded port");
    let (mut read, mut write) = socket.split();
    let send = async {
        write.write_all(payload).await.expect("write to the forwarded port");
        write.shutdown().await.expect("half-close");
    };
    let mut back = Vec::new();
    let (_, received) = within("the echo through the forwarded port", futures::future::join(send, read.read_to_end(&mut back))).await;
    received.expect("read from the forwarded port");
    back
}
