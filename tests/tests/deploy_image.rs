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
//!
//! In-cluster mode runs the same way: the shipped base configuration (no `clusters` key), the
//! service account's token, CA and namespace where Kubernetes mounts them in the root, and
//! `KUBERNETES_SERVICE_HOST`/`PORT` pointing at kube-sim serving HTTPS with a generated CA.

use std::path::PathBuf;
use std::process::Stdio;

use kube_sim::tls::TlsConfig;
use kube_sim::{Seed, Sim, SimConfig, User};
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

/// Where Kubernetes mounts a pod's service account, inside the root.
const SERVICE_ACCOUNT: &str = "var/run/secrets/kubernetes.io/serviceaccount";

/// The shipped base configuration (`deploy/kubernetes/base/proxy.yaml`: in-cluster discovery,
/// proxy mode, the drain) with only its listen address changed to the test's loopback.
fn base_config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/base/proxy.yaml");
    let shipped = std::fs::read_to_string(path).expect("the base's proxy.yaml");
    assert!(!shipped.lines().any(|l| l.starts_with("clusters:")), "the base names clusters: it no longer runs in-cluster discovery");
    let listen = shipped.lines().find(|l| l.starts_with("listen:")).expect("the base's listen line");
    shipped.replacen(listen, "listen: 127.0.0.1:0", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image's unpacked root: cargo xtask test builds the image and runs it"]
async fn the_image_runs_in_cluster_with_the_mounted_service_account_against_https() {
    let image = image();
    // The service account as the API server knows it: a user whose token is the mounted one.
    let token = "service-account-token-of-the-image-test".to_owned();
    let account = User { name: "system:serviceaccount:kubemux:kubemux-proxy".to_owned(), token: token.clone(), namespaces: None };
    let sim = Sim::start(SimConfig { seed: Seed::Demo, users: vec![account], tls: Some(TlsConfig::default()), ..SimConfig::default() }).await.expect("the simulator starts");
    let ca = sim.ca_pem().expect("an HTTPS simulator has a CA");

    let mounted = image.root.join(SERVICE_ACCOUNT);
    if mounted.exists() {
        std::fs::remove_dir_all(&mounted).expect("clear the service account of an earlier run");
    }
    std::fs::create_dir_all(&mounted).expect("the service account folder in the root");
    // Written as the kubelet writes them: the token with no newline, readable by the pod's user.
    for (file, contents) in [("token", token.as_str()), ("ca.crt", ca), ("namespace", "kubemux")] {
        std::fs::write(mounted.join(file), contents).expect("write a service account file");
    }
    // A folder of its own: the other test of this file lays out etc/kubemux at the same time.
    let mut mount = ConfigMapMount::new(image.root.join("etc/kubemux-in-cluster"));
    mount.publish(&base_config());

    let mut command = image.command(&["--config", "/etc/kubemux-in-cluster/config.yaml"]);
    // What the kubelet sets in every container for the cluster's `kubernetes` Service.
    command.env("KUBERNETES_SERVICE_HOST", "127.0.0.1").env("KUBERNETES_SERVICE_PORT", sim.addr().port().to_string());
    let mut proxy = command.spawn().expect("chroot starts");
    let pid = proxy.id().expect("a running proxy");
    let base = format!("http://{}", announced_addr(&mut proxy).await);

    // Ready once the one discovered cluster was checked, and the check went through: TLS with
    // the mounted CA (the certificate is valid for 127.0.0.1) and the mounted token.
    poll("/readyz 200", DEADLINE, || async {
        let ready = http::get(&format!("{base}/readyz")).await;
        if ready.status.as_u16() == 200 { Ok(()) } else { Err(format!("{} {}", ready.status, ready.body)) }
    })
    .await;
    clusters_ok(&base, &["in-cluster"]).await;

    // Pass-through as the service account (proxy mode, no token of the caller's): the
    // simulator's namespaces, which it serves only to a known token.
    let namespaces = http::get(&format!("{base}/clusters/in-cluster/api/v1/namespaces")).await;
    assert_eq!(namespaces.status.as_u16(), 200, "{}", namespaces.body);
    let list: serde_json::Value = serde_json::from_str(&namespaces.body).expect("a JSON list");
    let mut names: Vec<&str> = list["items"].as_array().map(|items| items.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect()).unwrap_or_default();
    names.sort_unstable();
    let (_, stored) = sim.state().store.list(&kube_sim::resources::NAMESPACES, None);
    let mut expected: Vec<&str> = stored.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "the namespaces through the proxy are the simulator's");
    assert!(names.contains(&"demo"), "{names:?}");

    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let exit = within("the proxy's exit after SIGTERM (the base's drain period)", proxy.wait()).await.expect("wait for the proxy");
    assert!(exit.success(), "after SIGTERM the proxy exited with {exit}");
    sim.shutdown().await;
}
