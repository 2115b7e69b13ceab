//! The clusters the proxy knows: one per kubeconfig context (or the in-cluster config), each
//! with a `kube::Client` per identity and a health status for `GET /clusters`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;

/// How a cluster answered its last health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    /// `/version` answered.
    Ok,
    /// The API server could not be reached.
    Unreachable,
    /// The proxy's credentials were refused.
    Unauthorized,
}

/// The most token clients kept per cluster; past it the cache starts over (clients are cheap
/// to rebuild, and this bounds memory whatever tokens clients send).
const MAX_TOKEN_CLIENTS: usize = 1024;

/// One upstream API server.
pub struct Cluster {
    /// The cluster's name (its kubeconfig context).
    pub name: String,
    config: kube::Config,
    proxy_client: kube::Client,
    token_clients: Mutex<HashMap<Arc<str>, kube::Client>>,
    health: Mutex<(Health, Option<String>)>,
}

impl Cluster {
    /// A cluster from a client configuration.
    pub fn new(name: String, config: kube::Config) -> Result<Cluster, kube::Error> {
        let proxy_client = kube::Client::try_from(config.clone())?;
        Ok(Cluster { name, config, proxy_client, token_clients: Mutex::new(HashMap::new()), health: Mutex::new((Health::Unknown, None)) })
    }

    /// A client acting as `identity`: the proxy's own credentials, or only the given token
    /// (client certificates and exec plugins of the proxy are never lent to a token).
    pub fn client(&self, identity: &Identity) -> Result<kube::Client, kube::Error> {
        let Identity::Token(token) = identity else {
            return Ok(self.proxy_client.clone());
        };
        let mut clients = self.token_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(token) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info = AuthInfo { token: Some(secrecy::SecretString::from(token.to_string())), ..AuthInfo::default() };
        let client = kube::Client::try_from(config)?;
        if clients.len() >= MAX_TOKEN_CLIENTS {
            clients.clear();
        }
        clients.insert(token.clone(), client.clone());
        Ok(client)
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// The last health check's result and server version.
    pub fn health(&self) -> (Health, Option<String>) {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn check_health(&self) {
        let result = tokio::time::timeout(Duration::from_secs(5), self.proxy_client.apiserver_version()).await;
        let health = match result {
            Ok(Ok(info)) => (Health::Ok, Some(info.git_version)),
            Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => (Health::Unauthorized, None),
            _ => (Health::Unreachable, None),
        };
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }
}

/// Where a cluster named in the config file comes from (`config`).
#[derive(Clone)]
pub enum ClusterSource {
    /// A kubeconfig's context (its current context when `None`).
    Kubeconfig {
        /// The cluster's name.
        name: String,
        /// The kubeconfig, already read.
        kubeconfig: Kubeconfig,
        /// The context.
        context: Option<String>,
    },
    /// An API server given by URL, CA file and token file.
    Server {
        /// The cluster's name.
        name: String,
        /// The API server's URL.
        server: String,
        /// A PEM file of the CA that signed the server's certificate.
        certificate_authority: Option<PathBuf>,
        /// A file holding the proxy's bearer token (re-read as kube does).
        token_file: Option<PathBuf>,
    },
}

/// Never prints a kubeconfig (it may hold credentials).
impl std::fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterSource::Kubeconfig { name, context, .. } => f.debug_struct("Kubeconfig").field("name", name).field("context", context).finish_non_exhaustive(),
            ClusterSource::Server { name, server, .. } => f.debug_struct("Server").field("name", name).field("server", server).finish_non_exhaustive(),
        }
    }
}

/// Every known cluster, by name.
#[derive(Default, Clone)]
pub struct Clusters {
    map: BTreeMap<String, Arc<Cluster>>,
}

/// Why the clusters could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClustersError {
    /// The kubeconfig could not be read.
    #[error("cannot read kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// A context could not be turned into a client.
    #[error("context {context}: {source}")]
    Context {
        /// The context.
        context: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Neither a kubeconfig nor an in-cluster config was found.
    #[error("no kubeconfig found and not running in a cluster: {0}")]
    NoConfig(String),
}

impl Clusters {
    /// Clusters from explicit configurations.
    pub fn from_configs(configs: impl IntoIterator<Item = (String, kube::Config)>) -> Result<Clusters, ClustersError> {
        let mut map = BTreeMap::new();
        for (name, config) in configs {
            let cluster = Cluster::new(name.clone(), config).map_err(|e| ClustersError::Context { context: name.clone(), source: Box::new(e) })?;
            map.insert(name, Arc::new(cluster));
        }
        Ok(Clusters { map })
    }

    /// One cluster per context of a kubeconfig.
    pub async fn from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Clusters, ClustersError> {
        let mut configs = Vec::new();
        for context in &kubeconfig.contexts {
            let options = KubeConfigOptions { context: Some(context.name.clone()), ..KubeConfigOptions::default() };
            let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
                .await
                .map_err(|e| ClustersError::Context { context: context.name.clone(), source: Box::new(e) })?;
            configs.push((context.name.clone(), config));
        }
        Clusters::from_configs(configs)
    }

    /// The clusters a config file names, built as discovery builds them.
    pub async fn from_sources(sources: Vec<ClusterSource>) -> Result<Clusters, ClustersError> {
        let mut configs = Vec::new();
        for source in sources {
            let (name, kubeconfig, context) = match source {
                ClusterSource::Kubeconfig { name, kubeconfig, context } => (name, kubeconfig, context),
                ClusterSource::Server { name, server, certificate_authority, token_file } => {
                    // The same path kube takes for a kubeconfig, so CA and token files behave alike.
                    let kubeconfig = Kubeconfig {
                        clusters: vec![NamedCluster {
                            name: name.clone(),
                            cluster: Some(kube::config::Cluster { server: Some(server), certificate_authority: certificate_authority.map(|p| p.display().to_string()), ..Default::default() }),
                            ..NamedCluster::default()
                        }],
                        auth_infos: vec![NamedAuthInfo { name: name.clone(), auth_info: Some(AuthInfo { token_file: token_file.map(|p| p.display().to_string()), ..AuthInfo::default() }), ..NamedAuthInfo::default() }],
                        contexts: vec![NamedContext { name: name.clone(), context: Some(Context { cluster: name.clone(), user: Some(name.clone()), ..Context::default() }), ..NamedContext::default() }],
                        current_context: Some(name.clone()),
                        ..Kubeconfig::default()
                    };
                    (name, kubeconfig, None)
                }
            };
            let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| ClustersError::Context { context: name.clone(), source: Box::new(e) })?;
            configs.push((name, config));
        }
        Clusters::from_configs(configs)
    }

    /// The usual discovery: `path` if given, else `$KUBECONFIG` or `~/.kube/config`, else the
    /// in-cluster service account (as a cluster named `in-cluster`).
    pub async fn discover(path: Option<&Path>) -> Result<Clusters, ClustersError> {
        if let Some(path) = path {
            return Clusters::from_kubeconfig(Kubeconfig::read_from(path).map_err(ClustersError::Kubeconfig)?).await;
        }
        match Kubeconfig::read() {
            Ok(kubeconfig) => Clusters::from_kubeconfig(kubeconfig).await,
            Err(file_error) => match kube::Config::incluster() {
                Ok(config) => Clusters::from_configs([("in-cluster".to_owned(), config)]),
                Err(incluster_error) => Err(ClustersError::NoConfig(format!("{file_error}; {incluster_error}"))),
            },
        }
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.map.get(name).cloned()
    }

    /// Every cluster, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.map.values()
    }

    /// Checks every cluster's health now and then every `interval`, until cancelled.
    pub async fn run_health_checks(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            futures::future::join_all(self.map.values().map(|c| c.check_health())).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
