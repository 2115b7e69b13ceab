//! `kubemux-demo`: the proxy with embedded simulators, so the demo needs no cluster. A binary of
//! its own, so the production `kubemux-proxy` links no simulator (`cargo tree -p kubemux-proxy`
//! shows no kube-sim).
//!
//! Three clusters over two kube-sim instances: `demo` and `staging` with full access, and
//! `demo-viewer`, the `demo` simulator seen by a user restricted to the `demo` namespace, so a
//! forbidden panel shows next to live ones. The simulators' exec runs real processes on this
//! machine, which is why demo mode refuses non-loopback addresses unless told otherwise.
//!
//! The proxy runs from a config file, as in production: [`Demo::start`] writes a kubeconfig per
//! cluster into the demo's folder (fresh tokens and ports every start) and, the first time, a
//! `proxy.yaml` naming them. Edit that file while the demo runs to add or remove clusters: the
//! proxy reloads it live.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kube_sim::{Seed, Sim, SimConfig, User};

use kubemux_proxy::clusters::ClustersError;

/// The embedded simulators; dropping them stops them (and every process they started).
pub struct Demo {
    sims: Vec<Sim>,
}

/// Why demo mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An address other machines can reach, without `--allow-remote`.
    #[error(
        "refusing to serve the demo on {0}: demo clusters run real processes on this machine for every \
         terminal, so only this machine may reach them. Listen on 127.0.0.1, or pass --allow-remote if \
         you really mean to let others run commands here"
    )]
    NotLoopback(SocketAddr),
    /// A simulator failed to start.
    #[error("cannot start a demo simulator: {0}")]
    Simulator(String),
    /// The clusters could not be built.
    #[error(transparent)]
    Clusters(#[from] ClustersError),
    /// The demo's folder could not be written.
    #[error("cannot write the demo's config into {0}: {1}")]
    Folder(PathBuf, std::io::Error),
}

/// The config file the demo writes when there is none: its three clusters and two forwards.
const CONFIG: &str = "\
# The kubemux demo's proxy config (docs/config.example.yaml documents every key). The proxy
# reloads this file while it runs: add a cluster below and it appears in the web app.
# The kubeconfigs next to this file are rewritten every time the demo starts.
clusters:
  - name: demo
    kubeconfig: demo.kubeconfig
  - name: staging
    kubeconfig: staging.kubeconfig
  - name: demo-viewer
    kubeconfig: demo-viewer.kubeconfig
# Port-forwards the proxy keeps (the web app's Forwards tab shows them live; open web through
# /forwards/web/). localPort 0: any free port, GET /forwards says which.
forwards:
  - name: web
    cluster: demo
    namespace: demo
    target: service/web
    port: 80
    localPort: 0
  - name: hello
    cluster: demo
    namespace: default
    target: deployment/hello
    port: 8000
    localPort: 0
";

fn token() -> String {
    (0..32).map(|_| fastrand::alphanumeric()).collect()
}

impl Demo {
    /// Checks the listen address, starts the simulators, writes their kubeconfigs into `folder`
    /// (and `proxy.yaml` if it is not there yet) and returns the config file.
    pub async fn start(listen: SocketAddr, allow_remote: bool, churn_per_second: f64, folder: &Path) -> Result<(Demo, PathBuf), DemoError> {
        if !listen.ip().is_loopback() && !allow_remote {
            return Err(DemoError::NotLoopback(listen));
        }
        let (admin, viewer) = (token(), token());
        let users = vec![
            User { name: "admin".into(), token: admin.clone(), namespaces: None },
            User { name: "viewer".into(), token: viewer.clone(), namespaces: Some(vec!["demo".into()]) },
        ];
        let start = |seed, churn| {
            let users = users.clone();
            async move {
                Sim::start(SimConfig { seed, churn_per_second: churn, users, ..SimConfig::default() })
                    .await
                    .map_err(|e| DemoError::Simulator(e.to_string()))
            }
        };
        let primary = start(Seed::Demo, churn_per_second).await?;
        let staging = start(Seed::Demo, churn_per_second / 2.0).await?;
        let written = |error| DemoError::Folder(folder.to_owned(), error);
        std::fs::create_dir_all(folder).map_err(written)?;
        for (name, sim, token) in [("demo", &primary, &admin), ("staging", &staging, &admin), ("demo-viewer", &primary, &viewer)] {
            write_private(&folder.join(format!("{name}.kubeconfig")), &kubeconfig(name, &sim.url(), token)).map_err(written)?;
        }
        let config = folder.join("proxy.yaml");
        if !config.exists() {
            std::fs::write(&config, CONFIG).map_err(written)?;
        }
        tracing::info!(demo = %primary.url(), staging = %staging.url(), config = %config.display(), "demo simulators started");
        Ok((Demo { sims: vec![primary, staging] }, config))
    }

    /// The simulators' URLs (`demo`, then `staging`).
    pub fn urls(&self) -> Vec<String> {
        self.sims.iter().map(Sim::url).collect()
    }

    /// Stops the simulators and every process they started.
    pub async fn shutdown(self) {
        for sim in self.sims {
            sim.shutdown().await;
        }
    }
}

/// A kubeconfig for one simulator acting as the user of `token`.
fn kubeconfig(name: &str, server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\nusers:\n- name: {name}\n  user:\n    token: {token}\n\
         contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\n"
    )
}

/// Writes a file only its owner may read (it holds a token).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

// Test code: its unwraps and expects are the assertions (a failure is the test failing).
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_non_loopback_address_unless_told() {
        let everywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let folder = std::env::temp_dir().join(format!("kubemux-demo-test-{}", std::process::id()));
        let refused = Demo::start(everywhere, false, 0.0, &folder).await.err().expect("refused");
        assert!(matches!(refused, DemoError::NotLoopback(_)));
        assert!(refused.to_string().contains("real processes"), "it says why: {refused}");
        let (demo, config) = Demo::start(everywhere, true, 0.0, &folder).await.expect("allowed when told");
        // The file it wrote is a valid proxy config naming the three clusters.
        let file = kubemux_proxy::config::load(&config).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = file.clusters.as_deref().unwrap_or_default().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["demo", "staging", "demo-viewer"]);
        // And two forwards, so the web app's Forwards view is not empty.
        let forwards: Vec<&str> = file.forwards.as_deref().unwrap_or_default().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(forwards, ["web", "hello"]);
        // A second start keeps the user's edits to proxy.yaml.
        std::fs::write(&config, "clusters:\n  - name: demo\n    kubeconfig: demo.kubeconfig\n").unwrap();
        demo.shutdown().await;
        let (demo, again) = Demo::start(everywhere, true, 0.0, &folder).await.unwrap();
        assert_eq!(kubemux_proxy::config::load(&again).unwrap().clusters.unwrap().len(), 1);
        demo.shutdown().await;
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
