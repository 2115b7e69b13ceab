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
}
