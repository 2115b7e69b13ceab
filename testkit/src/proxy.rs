//! A proxy that a test can kill as abruptly as a crashed process, and the kubeconfig it reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kube::config::Kubeconfig;
use kubemux_proxy::clusters::Clusters;
use kubemux_proxy::{Proxy, ProxySettings};
use tokio::sync::oneshot;

/// A proxy on its own thread and runtime, so that it can be killed abruptly: dropping the
/// runtime drops every task and closes every socket without a close frame, which is what a
/// client sees when the proxy process is killed.
pub struct ProxyProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts a proxy with `settings` over the contexts of `kubeconfig`.
    pub fn start(settings: ProxySettings, kubeconfig: Kubeconfig) -> ProxyProcess {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let clusters = Clusters::from_kubeconfig(kubeconfig).await.expect("clusters from the kubeconfig");
                let proxy = Proxy::start(settings, clusters).await.expect("the proxy binds");
                addr_tx.send(proxy.addr()).expect("the test waits for the address");
                if stop_rx.await.unwrap_or(false) {
                    proxy.shutdown().await;
                }
            });
            runtime.shutdown_background();
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the proxy started");
        ProxyProcess { addr, stop: Some(stop), thread: Some(thread) }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://…/mux`.
    pub fn mux_url(&self) -> String {
        format!("ws://{}/mux", self.addr)
    }

    /// `http://…`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn end(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Kills the proxy: every connection drops with no close frame.
    pub fn kill(mut self) {
        self.end(false);
    }

    /// Shuts the proxy down gracefully (close 1001).
    pub fn stop(mut self) {
        self.end(true);
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// A kubeconfig with one context per `(name, server, token)`.
pub fn kubeconfig(contexts: &[(&str, &str, Option<&str>)]) -> Kubeconfig {
    let mut yaml = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server, _) in contexts {
        yaml.push_str(&format!("- name: {name}\n  cluster:\n    server: {server}\n"));
    }
    yaml.push_str("users:\n");
    for (name, _, token) in contexts {
        match token {
            Some(token) => yaml.push_str(&format!("- name: {name}\n  user:\n    token: {token}\n")),
            None => yaml.push_str(&format!("- name: {name}\n  user: {{}}\n")),
        }
    }
    yaml.push_str("contexts:\n");
    for (name, _, _) in contexts {
        yaml.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"));
    }
    yaml.push_str(&format!("current-context: {}\n", contexts[0].0));
    Kubeconfig::from_yaml(&yaml).expect("a valid kubeconfig")
}

/// The proxy binary, built (or found up to date) once per test run, in the same target
/// directory and profile as this test. `cargo test` builds another package's binaries only
/// for that package's own integration tests, so the test asks cargo itself.
pub fn proxy_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            // <target>/<profile>/deps/<this test>
            let profile_dir = exe.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps");
            let target_dir = profile_dir.parent().expect("a target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--quiet", "-p", "kubemux-proxy", "--bin", "kubemux-proxy", "--target-dir"]).arg(target_dir);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "cargo build -p kubemux-proxy failed: {status}");
            let binary = profile_dir.join("kubemux-proxy");
            assert!(binary.is_file(), "no binary at {}", binary.display());
            binary
        })
        .clone()
}

/// A kubeconfig written to a temporary file for a proxy process, removed when dropped.
pub struct KubeconfigFile(tempfile::NamedTempFile);

impl KubeconfigFile {
    /// Writes `config` (as JSON, which is YAML: kube and the proxy read it as a kubeconfig).
    pub fn new(config: &Kubeconfig) -> KubeconfigFile {
        let file = tempfile::Builder::new().prefix("kubemux-kubeconfig-").suffix(".json").tempfile().expect("a temporary file");
        serde_json::to_writer(file.as_file(), config).expect("write the kubeconfig");
        KubeconfigFile(file)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Starts the real proxy binary on 127.0.0.1:0 with `args`, `RUST_LOG` set to `rust_log` and
/// stderr going to `stderr`; returns it, killed on drop, with the address it announced on its
/// first line of stdout.
pub async fn start_binary(binary: &Path, args: &[&std::ffi::OsStr], rust_log: &str, stderr: std::process::Stdio) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("the proxy starts");
    let addr = announced_addr(&mut child).await;
    (child, addr)
}

/// The address a proxy process started with its stdout piped announces on its first line
/// (`kubemux-proxy listening on http://ADDR`), within the deadline.
pub async fn announced_addr(child: &mut tokio::process::Child) -> SocketAddr {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = crate::wait::within("the proxy's listening line", lines.next_line()).await.expect("stdout reads").expect("a first line");
    let addr = first.strip_prefix("kubemux-proxy listening on http://").unwrap_or_else(|| panic!("unexpected first line: {first}"));
    addr.parse().expect("an address")
}
