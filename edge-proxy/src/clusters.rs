//! The clusters the proxy knows: one per kubeconfig context (or the in-cluster config), each
//! with a `kube::Client` per identity and a health status for `GET /clusters`.
//!
//! A [`Cluster`] is immutable once built: a reload that changes a cluster's server, CA or
//! credentials builds a new one and retires the old ([`Cluster::retired`]), and a reload that
//! leaves it as it was keeps the very same `Arc` (compared by [`ClusterSource::fingerprint`]),
//! so nothing that uses it notices. The set in force is part of [`crate::live::Snapshot`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// What it was built from; equal fingerprints mean a reload keeps this cluster as it is.
    fingerprint: u64,
    /// The files it was built from (watched for changes).
    files: Vec<PathBuf>,
    config: kube::Config,
    proxy_client: kube::Client,
    token_clients: Mutex<HashMap<Arc<str>, kube::Client>>,
    health: Mutex<(Health, Option<String>)>,
    /// Cancelled when this cluster leaves the set in force: removed, or replaced by a cluster of
    /// the same name with other settings.
    retired: CancellationToken,
    /// Cancelled when no cluster of this name is in force any more (shared by the clusters that
    /// replace one another under the name).
    removed: CancellationToken,
}

/// Fingerprints of clusters built from a client configuration rather than a source: unique, so
/// such a cluster never counts as unchanged.
static NEXT_UNIQUE: AtomicU64 = AtomicU64::new(1);

impl Cluster {
    /// A cluster from a client configuration.
    pub fn new(name: String, config: kube::Config) -> Result<Cluster, kube::Error> {
        Cluster::build(name, config, (NEXT_UNIQUE.fetch_add(1, Ordering::Relaxed), Vec::new()), CancellationToken::new(), (Health::Unknown, None))
    }

    fn build(name: String, config: kube::Config, (fingerprint, files): (u64, Vec<PathBuf>), removed: CancellationToken, health: (Health, Option<String>)) -> Result<Cluster, kube::Error> {
        let proxy_client = kube::Client::try_from(config.clone())?;
        Ok(Cluster {
            name,
            fingerprint,
            files,
            config,
            proxy_client,
            token_clients: Mutex::new(HashMap::new()),
            health: Mutex::new(health),
            retired: CancellationToken::new(),
            removed,
        })
    }

    /// The files it was built from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Cancelled when this cluster stops being the one in force under its name: what was built
    /// on it (upstream watches) moves to the cluster that replaced it, or ends if there is none.
    pub fn retired(&self) -> &CancellationToken {
        &self.retired
    }

    /// Cancelled when the cluster's name leaves the configuration: its terminals run their
    /// teardown, its upstream watches end.
    pub fn removed(&self) -> &CancellationToken {
        &self.removed
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
// A handful are built per config load and kept in one list: boxing the kubeconfig would save
// nothing that matters.
#[allow(clippy::large_enum_variant)]
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
        /// The file it was read from, watched for changes (credential rotation).
        file: Option<PathBuf>,
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
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    InCluster {
        /// The cluster's name (`in-cluster`).
        name: String,
    },
}

/// Where Kubernetes mounts a pod's service account; its token is rotated in place.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl ClusterSource {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        match self {
            ClusterSource::Kubeconfig { name, .. } | ClusterSource::Server { name, .. } | ClusterSource::InCluster { name } => name,
        }
    }

    /// The files the cluster is built from: a change to any of them is a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            ClusterSource::Kubeconfig { kubeconfig, context, file, .. } => {
                let mut files: Vec<PathBuf> = file.iter().cloned().collect();
                files.extend(referenced_files(kubeconfig, context.as_deref()).into_iter().map(PathBuf::from));
                files
            }
            ClusterSource::Server { certificate_authority, token_file, .. } => certificate_authority.iter().chain(token_file).cloned().collect(),
            ClusterSource::InCluster { .. } => ["token", "ca.crt"].iter().map(|f| Path::new(SERVICE_ACCOUNT_DIR).join(f)).collect(),
        }
    }

    /// A digest of everything the cluster is built from: its entry, the parts of its
    /// kubeconfig its context uses (not the other contexts), and the contents of the files
    /// they name (a rotated token file changes it). Equal digests: the cluster is unchanged.
    pub fn fingerprint(&self) -> u64 {
        // SipHash with fixed keys: stable within the process, which is all a comparison of
        // the set in force with a reloaded one needs.
        let mut hasher = std::hash::DefaultHasher::new();
        match self {
            ClusterSource::Kubeconfig { name, kubeconfig, context, .. } => {
                ("kubeconfig", name, context).hash(&mut hasher);
                let context_name = context.as_deref().or(kubeconfig.current_context.as_deref());
                let named = kubeconfig.contexts.iter().find(|c| Some(c.name.as_str()) == context_name);
                let inner = named.and_then(|c| c.context.as_ref());
                let cluster = inner.and_then(|c| kubeconfig.clusters.iter().find(|n| n.name == c.cluster));
                let user = inner.and_then(|c| c.user.as_deref()).and_then(|u| kubeconfig.auth_infos.iter().find(|n| n.name == u));
                for part in [serde_json::to_string(&named), serde_json::to_string(&cluster), serde_json::to_string(&user)] {
                    part.unwrap_or_default().hash(&mut hasher);
                }
            }
            ClusterSource::Server { name, server, certificate_authority, token_file } => ("server", name, server, certificate_authority, token_file).hash(&mut hasher),
            ClusterSource::InCluster { name } => ("in-cluster", name, std::env::var("KUBERNETES_SERVICE_HOST").ok(), std::env::var("KUBERNETES_SERVICE_PORT").ok()).hash(&mut hasher),
        }
        for file in self.files() {
            // A file that cannot be read hashes as absent; building the cluster reports it.
            std::fs::read(&file).ok().hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The client configuration, built as kube builds it from a kubeconfig.
    async fn config(&self) -> Result<kube::Config, Box<dyn std::error::Error + Send + Sync>> {
        let (kubeconfig, context) = match self {
            ClusterSource::Kubeconfig { kubeconfig, context, .. } => (kubeconfig.clone(), context.clone()),
            ClusterSource::Server { name, server, certificate_authority, token_file } => {
                // The token is read here, trimmed as client-go trims it (a file written with
                // `echo` ends in a newline, which kube would send as part of the header), and
                // given inline: the proxy watches the file and rebuilds the cluster when it is
                // rotated, so kube's own re-reading is not needed.
                let token = match token_file {
                    None => None,
                    Some(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
                        let token = text.trim();
                        if token.is_empty() {
                            return Err(format!("token file {} is empty", path.display()).into());
                        }
                        Some(secrecy::SecretString::from(token.to_owned()))
                    }
                };
                // The same path kube takes for a kubeconfig, so the CA file behaves alike.
                let kubeconfig = Kubeconfig {
                    clusters: vec![NamedCluster {
                        name: name.clone(),
                        cluster: Some(kube::config::Cluster { server: Some(server.clone()), certificate_authority: certificate_authority.as_ref().map(|p| p.display().to_string()), ..Default::default() }),
                        ..NamedCluster::default()
                    }],
                    auth_infos: vec![NamedAuthInfo { name: name.clone(), auth_info: Some(AuthInfo { token, ..AuthInfo::default() }), ..NamedAuthInfo::default() }],
                    contexts: vec![NamedContext { name: name.clone(), context: Some(Context { cluster: name.clone(), user: Some(name.clone()), ..Context::default() }), ..NamedContext::default() }],
                    current_context: Some(name.clone()),
                    ..Kubeconfig::default()
                };
                (kubeconfig, None)
            }
            ClusterSource::InCluster { .. } => return kube::Config::incluster().map_err(|e| Box::new(e) as _),
        };
        let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| Box::new(e) as _)
    }
}

/// The files a kubeconfig's context reads: its cluster's CA, its user's client certificate,
/// key and token file.
fn referenced_files(kubeconfig: &Kubeconfig, context: Option<&str>) -> BTreeSet<String> {
    let context_name = context.or(kubeconfig.current_context.as_deref());
    let Some(inner) = kubeconfig.contexts.iter().find(|c| Some(c.name.as_str()) == context_name).and_then(|c| c.context.as_ref()) else { return BTreeSet::new() };
    let cluster = kubeconfig.clusters.iter().find(|n| n.name == inner.cluster).and_then(|n| n.cluster.as_ref());
    let user = inner.user.as_deref().and_then(|u| kubeconfig.auth_infos.iter().find(|n| n.name == u)).and_then(|n| n.auth_info.as_ref());
    let mut files = BTreeSet::new();
    files.extend(cluster.and_then(|c| c.certificate_authority.clone()));
    if let Some(user) = user {
        files.extend([&user.client_certificate, &user.client_key, &user.token_file].into_iter().flatten().cloned());
    }
    files
}

/// Never prints a kubeconfig (it may hold credentials).
impl std::fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterSource::Kubeconfig { name, context, file, .. } => f.debug_struct("Kubeconfig").field("name", name).field("context", context).field("file", file).finish_non_exhaustive(),
            ClusterSource::Server { name, server, .. } => f.debug_struct("Server").field("name", name).field("server", server).finish_non_exhaustive(),
            ClusterSource::InCluster { name } => f.debug_struct("InCluster").field("name", name).finish(),
        }
    }
}

/// Every known cluster, by name.
#[derive(Default, Clone)]
pub struct Clusters {
    map: BTreeMap<String, Arc<Cluster>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
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
        Clusters::from_sources(sources_of(kubeconfig, None)).await
    }

    /// The clusters of `sources`, built as discovery builds them.
    pub async fn from_sources(sources: Vec<ClusterSource>) -> Result<Clusters, ClustersError> {
        Clusters::default().rebuild(sources).await
    }

    /// The set `sources` describe, keeping every cluster of `self` whose source is unchanged
    /// (the same `Arc`: its clients, health and everything built on it stay). A cluster whose
    /// source changed is built anew and inherits its name's `removed` token and last health.
    /// Nothing of `self` is retired here: [`crate::live::Live`] does that once the new set is
    /// in force.
    pub async fn rebuild(&self, sources: Vec<ClusterSource>) -> Result<Clusters, ClustersError> {
        let mut map = BTreeMap::new();
        for source in sources {
            let name = source.name().to_owned();
            let fingerprint = source.fingerprint();
            let previous = self.map.get(&name);
            let cluster = match previous {
                Some(previous) if previous.fingerprint == fingerprint => previous.clone(),
                _ => {
                    let config = source.config().await.map_err(|source| ClustersError::Context { context: name.clone(), source })?;
                    let removed = previous.map_or_else(CancellationToken::new, |p| p.removed.clone());
                    let health = previous.map_or((Health::Unknown, None), |p| p.health());
                    let cluster = Cluster::build(name.clone(), config, (fingerprint, source.files()), removed, health).map_err(|e| ClustersError::Context { context: name.clone(), source: Box::new(e) })?;
                    Arc::new(cluster)
                }
            };
            map.insert(name, cluster);
        }
        Ok(Clusters { map })
    }

    /// The usual discovery: `path` if given, else `$KUBECONFIG` or `~/.kube/config`, else the
    /// in-cluster service account (as a cluster named `in-cluster`).
    pub async fn discover(path: Option<&Path>) -> Result<Clusters, ClustersError> {
        Clusters::from_sources(discover(path)?).await
    }

    /// Whether a cluster of this name is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Whether `name` is the very same cluster in both sets.
    pub fn same(&self, other: &Clusters, name: &str) -> bool {
        matches!((self.map.get(name), other.map.get(name)), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }

    /// The names of the clusters, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// How many clusters there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.map.get(name).cloned()
    }

    /// Every cluster, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.map.values()
    }

    /// Checks every cluster's health, all at once.
    pub async fn check_health(&self) {
        futures::future::join_all(self.map.values().map(|c| c.check_health())).await;
    }
}

/// The discovery sources: `path` if given, else `$KUBECONFIG` or `~/.kube/config` (one source
/// per context, each watched as a file), else the in-cluster service account.
pub fn discover(path: Option<&Path>) -> Result<Vec<ClusterSource>, ClustersError> {
    if let Some(path) = path {
        return Ok(sources_of(Kubeconfig::read_from(path).map_err(ClustersError::Kubeconfig)?, Some(path.to_owned())));
    }
    match Kubeconfig::read() {
        // Which file `$KUBECONFIG` names (its first, when it lists several) or the default.
        Ok(kubeconfig) => {
            let file = std::env::var_os("KUBECONFIG")
                .and_then(|list| std::env::split_paths(&list).next())
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube/config")));
            Ok(sources_of(kubeconfig, file))
        }
        Err(file_error) => match kube::Config::incluster() {
            Ok(_) => Ok(vec![ClusterSource::InCluster { name: crate::config::IN_CLUSTER.to_owned() }]),
            Err(incluster_error) => Err(ClustersError::NoConfig(format!("{file_error}; {incluster_error}"))),
        },
    }
}

/// One source per context of a kubeconfig.
fn sources_of(kubeconfig: Kubeconfig, file: Option<PathBuf>) -> Vec<ClusterSource> {
    kubeconfig
        .contexts
        .iter()
        .map(|context| ClusterSource::Kubeconfig { name: context.name.clone(), kubeconfig: kubeconfig.clone(), context: Some(context.name.clone()), file: file.clone() })
        .collect()
}
