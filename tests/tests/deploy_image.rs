//! The container image's root filesystem, run as a container runtime would run it: the image's
//! entrypoint, as the image's user, with that root as `/` (chroot), so the binary sees only the
//! image's files. A dynamically linked binary would find no loader there, a CA bundle in the
//! wrong place would be missing, and a write to the root would be refused (uid 65532 owns
//! nothing in it): what Kubernetes' `readOnlyRootFilesystem` and `runAsNonRoot` demand.
//!
//! `cargo xtask test` builds the image (`cargo xtask image`), copies its root out of
//! `podman image mount` and runs this file with `--ignored`, naming the root, the user and the
//! entrypoint from `podman image inspect` in `KUBEMUX_IMAGE_ROOT`, `KUBEMUX_IMAGE_USER` and
//! `KUBEMUX_IMAGE_ENTRYPOINT`. chroot rather than `podman run` (which cannot start containers on
//! this kind of machine) or running the binary from the host (which would prove neither the
//! static link nor the paths): it needs root, as the xtask step checks.

use std::path::PathBuf;
use std::process::Stdio;

use kube_sim::{Sim, SimConfig};
use kubemux_testkit::announced_addr;
use kubemux_testkit::http;
use kubemux_testkit::wait::{DEADLINE, poll, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

const IGNORED: &str = "needs the image's unpacked root: cargo xtask test builds the image and runs it";

/// The unpacked image, as `cargo xtask test` describes it.
struct Image {
    root: PathBuf,
    user: String,
    entrypoint: String,
}

fn image() -> Image {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {IGNORED}"));
    Image { root: PathBuf::from(var("KUBEMUX_IMAGE_ROOT")), user: var("KUBEMUX_IMAGE_USER"), entrypoint: var("KUBEMUX_IMAGE_ENTRYPOINT") }
}

impl Image {
    /// The entrypoint with `args`, inside the root, as the image's user; killed when dropped.
    fn command(&self, args: &[&str]) -> Command {
        // Found on the test's PATH: the child's environment is cleared, PATH with it.
        let chroot = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("chroot")).find(|p| p.is_file()))
            .expect("chroot (coreutils) on PATH");
        let mut command = Command::new(chroot);
        command
            .arg(format!("--userspec={}", self.user))
            .arg(&self.root)
            .arg(&self.entrypoint)
            .args(args)
            // What the image's ENV sets; chroot starts with the caller's environment.
            .env_clear()
            .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }
}

#[tokio::test]
#[ignore = "needs the image's unpacked root: cargo xtask test builds the image and runs it"]
async fn the_image_runs_as_a_numeric_non_root_user_with_a_ca_bundle() {
    let image = image();
    let (uid, gid) = image.user.split_once(':').unwrap_or((&image.user, &image.user));
    for id in [uid, gid] {
        // Numeric: Kubernetes checks runAsNonRoot against the image's user without reading
        // the image's /etc/passwd, so a name would make the pod fail to start.
        let id: u32 = id.parse().unwrap_or_else(|_| panic!("the image's user {:?} is not numeric", image.user));
        assert_ne!(id, 0, "the image runs as root");
    }
    let bundle = std::fs::read_to_string(image.root.join("etc/ssl/certs/ca-certificates.crt")).expect("the image has a CA bundle");
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 10, "the CA bundle holds few certificates");

    let output = within("kubemux-proxy --version", image.command(&["--version"]).output()).await.expect("chroot runs");
    assert!(output.status.success(), "--version failed ({}): is the binary static?", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("kubemux-proxy {}", env!("CARGO_PKG_VERSION")));
}

/// `/etc/kubemux` laid out as the kubelet lays out a mounted ConfigMap: each version in a
/// folder of its own, `..data` pointing at the current one, `config.yaml` pointing through
/// `..data`; an update swaps `..data` with a rename.
struct ConfigMapMount {
    dir: PathBuf,
    versions: u32,
}

impl ConfigMapMount {
    fn new(dir: PathBuf) -> ConfigMapMount {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear the config folder of an earlier run");
        }
        std::fs::create_dir_all(&dir).expect("a config folder in the root");
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).expect("the config.yaml link");
        ConfigMapMount { dir, versions: 0 }
    }

    fn publish(&mut self, config: &str) {
        self.versions += 1;
        let version = format!("..version_{}", self.versions);
        std::fs::create_dir(self.dir.join(&version)).expect("a version folder");
        std::fs::write(self.dir.join(&version).join("config.yaml"), config).expect("write the config");
        std::os::unix::fs::symlink(&version, self.dir.join("..data_tmp")).expect("the ..data_tmp link");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("swap ..data");
    }
}

fn clusters_config(sims: &[(&str, &Sim)]) -> String {
    sims.iter().fold(String::from("listen: 127.0.0.1:0\nclusters:\n"), |yaml, (name, sim)| yaml + &format!("  - name: {name}\n    server: {}\n", sim.url()))
}

/// Polls `/clusters` until it lists exactly `names`, each `ok`.
async fn clusters_ok(base: &str, names: &[&str]) {
    poll(&format!("{names:?} ok in /clusters"), DEADLINE, || async {
        let answer = http::get(&format!("{base}/clusters")).await;
        let clusters: serde_json::Value = serde_json::from_str(&answer.body).map_err(|e| format!("{e}: {}", answer.body))?;
        let listed = clusters.as_array().map(|all| all.iter().filter(|c| c["status"] == "ok").filter_map(|c| c["name"].as_str()).collect::<Vec<_>>());
        if listed.as_deref() == Some(names) && clusters.as_array().is_some_and(|all| all.len() == names.len()) { Ok(()) } else { Err(answer.body) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image's unpacked root: cargo xtask test builds the image and runs it"]
async fn the_image_serves_reloads_a_configmap_swap_and_exits_0_on_sigterm() {
    let image = image();
    let first = Sim::start(SimConfig::default()).await.expect("the simulator starts");
    let second = Sim::start(SimConfig::default()).await.expect("the simulator starts");
    // The config where the Deployment mounts it; the simulators on the host's loopback, which
    // the chroot shares.
    let mut mount = ConfigMapMount::new(image.root.join("etc/kubemux"));
    mount.publish(&clusters_config(&[("sim", &first)]));

    let mut proxy = image.command(&["--config", "/etc/kubemux/config.yaml"]).spawn().expect("chroot starts");
    let pid = proxy.id().expect("a running proxy");
    let addr = announced_addr(&mut proxy).await;
    let base = format!("http://{addr}");

    let health = http::get(&format!("{base}/healthz")).await;
    assert_eq!((health.status.as_u16(), health.body.as_str()), (200, "ok\n"));
    clusters_ok(&base, &["sim"]).await;
    let ready = http::get(&format!("{base}/readyz")).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);

    // A ConfigMap update, as the kubelet applies it: the proxy, reading only what the image
    // and the mount give it, reloads and serves the added cluster.
    mount.publish(&clusters_config(&[("sim", &first), ("sim-2", &second)]));
    clusters_ok(&base, &["sim", "sim-2"]).await;

    // chroot execs the proxy, so the process is the proxy, and it runs as the image's user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the proxy's /proc status");
    let uid = image.user.split(':').next().unwrap_or_default();
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).expect("a Uid line");
    assert!(uids.split_whitespace().all(|id| id == uid), "the proxy runs as uids {uids}, not {uid}");

    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let exit = within("the proxy's exit after SIGTERM", proxy.wait()).await.expect("wait for the proxy");
    assert!(exit.success(), "after SIGTERM the proxy exited with {exit}");
}
