//! `kubemux-demo`: the proxy with embedded simulators, so the demo needs no cluster. A binary of
//! its own, so the production `kubemux-proxy` links no simulator (`cargo tree -p kubemux-proxy`
//! shows no kube-sim).
//!
//! Three clusters over two kube-sim instances: `demo` and `staging` with full access, and
//! `demo-viewer`, the `demo` simulator seen by a user restricted to the `demo` namespace, so a
//! forbidden panel shows next to live ones. The simulators' exec runs real processes on this
//! machine, which is why demo mode refuses non-loopback addresses unless told otherwise.

use std::net::SocketAddr;

use kube_sim::{Seed, Sim, SimConfig, User};

use kubemux_proxy::clusters::{Clusters, ClustersError};

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
}

fn token() -> String {
    (0..32).map(|_| fastrand::alphanumeric()).collect()
}

impl Demo {
    /// Checks the listen address, starts the simulators and returns their clusters.
    pub async fn start(listen: SocketAddr, allow_remote: bool, churn_per_second: f64) -> Result<(Demo, Clusters), DemoError> {
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
        let config = |sim: &Sim, token: &str| {
            let mut config = kube::Config::new(sim.url().parse().expect("a simulator URL is a valid URI"));
            config.auth_info.token = Some(token.to_owned().into());
            config
        };
        let clusters = Clusters::from_configs([
            ("demo".to_owned(), config(&primary, &admin)),
            ("staging".to_owned(), config(&staging, &admin)),
            ("demo-viewer".to_owned(), config(&primary, &viewer)),
        ])?;
        tracing::info!(demo = %primary.url(), staging = %staging.url(), "demo simulators started");
        Ok((Demo { sims: vec![primary, staging] }, clusters))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_non_loopback_address_unless_told() {
        let everywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let refused = Demo::start(everywhere, false, 0.0).await.err().expect("refused");
        assert!(matches!(refused, DemoError::NotLoopback(_)));
        assert!(refused.to_string().contains("real processes"), "it says why: {refused}");
        let (demo, clusters) = Demo::start(everywhere, true, 0.0).await.expect("allowed when told");
        assert_eq!(clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["demo", "demo-viewer", "staging"]);
        demo.shutdown().await;
    }
}
