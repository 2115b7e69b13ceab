//! `--config PATH`: the proxy's settings as YAML (JSON is YAML), every flag with a camelCase
//! key (`docs/config.example.yaml` documents each with its default). Validation is total: an
//! unknown key, a wrong type, a duplicate cluster name, a missing file, a malformed address or a
//! duration that is negative, NaN or infinite is a [`ConfigError`] naming the file, line,
//! column and key, and what would be valid. Nothing here panics on any input.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::Kubeconfig;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::auth::AuthMode;
use crate::clusters::ClusterSource;
use crate::forward::spec::{ForwardSpec, Origin, PortRef, Probe, Target};

/// A config file, validated. `None` is a key the file does not give.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<SocketAddr>,
    /// `allowedOrigins`.
    pub allowed_origins: Option<Vec<String>>,
    /// `auth.mode`.
    pub auth_mode: Option<AuthMode>,
    /// `auth.allowAnonymousRemote`.
    pub allow_anonymous_remote: Option<bool>,
    /// `clusters`, resolved (an `allContexts` entry is one source per context).
    pub clusters: Option<Vec<ClusterSource>>,
    /// `maxSubscriptions`.
    pub max_subscriptions: Option<usize>,
    /// `maxMessageBytes`.
    pub max_message_bytes: Option<usize>,
    /// `maxQueuedBytes`.
    pub max_queued_bytes: Option<usize>,
    /// `deflate`.
    pub deflate: Option<bool>,
    /// `deflateIdleRelease` (seconds).
    pub deflate_idle_release: Option<Duration>,
    /// `history`.
    pub history: Option<usize>,
    /// `upstreamIdleTimeout` (seconds).
    pub upstream_idle_timeout: Option<Duration>,
    /// `linger` (seconds).
    pub linger: Option<Duration>,
    /// `terminalGrace` (seconds).
    pub terminal_grace: Option<Duration>,
    /// `terminalPingInterval` (seconds).
    pub terminal_ping_interval: Option<Duration>,
    /// `healthInterval` (seconds).
    pub health_interval: Option<Duration>,
    /// `drainPeriod` (seconds).
    pub drain_period: Option<Duration>,
    /// `static`.
    pub static_dir: Option<PathBuf>,
    /// `forwards`.
    pub forwards: Option<Vec<ForwardSpec>>,
}

impl FileConfig {
    /// `settings` with every key the file gives put over it.
    pub fn apply_to(&self, mut settings: crate::ProxySettings) -> crate::ProxySettings {
        fn put<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *slot = value.clone();
            }
        }
        put(&mut settings.listen, &self.listen);
        put(&mut settings.allowed_origins, &self.allowed_origins);
        put(&mut settings.auth.mode, &self.auth_mode);
        put(&mut settings.auth.allow_anonymous_remote, &self.allow_anonymous_remote);
        put(&mut settings.mux.max_subscriptions, &self.max_subscriptions);
        put(&mut settings.mux.max_message_bytes, &self.max_message_bytes);
        put(&mut settings.mux.max_queued_bytes, &self.max_queued_bytes);
        put(&mut settings.mux.deflate, &self.deflate);
        put(&mut settings.mux.deflate_idle_release, &self.deflate_idle_release);
        put(&mut settings.registry.history, &self.history);
        put(&mut settings.registry.idle_timeout, &self.upstream_idle_timeout);
        put(&mut settings.registry.linger, &self.linger);
        put(&mut settings.terminal.grace, &self.terminal_grace);
        if let Some(interval) = self.terminal_ping_interval {
            settings.terminal.ping_interval = interval;
            settings.terminal.dead_after = interval.saturating_mul(3);
        }
        put(&mut settings.health_interval, &self.health_interval);
        put(&mut settings.drain, &self.drain_period);
        if self.static_dir.is_some() {
            settings.static_dir = self.static_dir.clone();
        }
        put(&mut settings.forwards, &self.forwards);
        settings
    }
}

/// A config file as the source of a live proxy's configuration: its keys over `base`, then
/// `pinned` over those (what a caller's own flags fix). Read again on every reload.
pub struct FileSource {
    /// The config file.
    pub file: PathBuf,
    /// Settings for the keys the file leaves out.
    pub base: crate::ProxySettings,
    /// Settings that win over the file's.
    pub pinned: Box<dyn Fn(crate::ProxySettings) -> crate::ProxySettings + Send + Sync>,
}

impl crate::live::Loader for FileSource {
    fn load(&self) -> Result<crate::live::Candidate, String> {
        let file = load(&self.file).map_err(|e| e.to_string())?;
        let settings = (self.pinned)(file.apply_to(self.base.clone()));
        Ok(crate::live::Candidate { settings, sources: file.clusters.unwrap_or_default() })
    }

    fn file(&self) -> Option<PathBuf> {
        Some(self.file.clone())
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.clone()]
    }
}

/// Why a config file was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file says something invalid at a place in it.
    At {
        /// The file.
        file: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// The key, as a path (`clusters[1].name`), or empty when there is none.
        key: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => write!(f, "{}: cannot read the config file: {source}", file.display()),
            ConfigError::At { file, line, column, key, message } if key.is_empty() => write!(f, "{}:{line}:{column}: {message}", file.display()),
            ConfigError::At { file, line, column, key, message } => write!(f, "{}:{line}:{column}: {key}: {message}", file.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    allowed_origins: Option<Vec<String>>,
    auth: Option<RawAuth>,
    clusters: Option<Vec<Spanned<RawCluster>>>,
    max_subscriptions: Option<usize>,
    max_message_bytes: Option<usize>,
    max_queued_bytes: Option<usize>,
    deflate: Option<bool>,
    deflate_idle_release: Option<Spanned<f64>>,
    history: Option<usize>,
    upstream_idle_timeout: Option<Spanned<f64>>,
    linger: Option<Spanned<f64>>,
    terminal_grace: Option<Spanned<f64>>,
    terminal_ping_interval: Option<Spanned<f64>>,
    health_interval: Option<Spanned<f64>>,
    drain_period: Option<Spanned<f64>>,
    #[serde(rename = "static")]
    static_dir: Option<Spanned<PathBuf>>,
    forwards: Option<Vec<Spanned<RawForward>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawForward {
    name: Option<Spanned<String>>,
    cluster: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    port: Option<Spanned<RawPort>>,
    local_port: Option<Spanned<u16>>,
    bind: Option<Spanned<String>>,
    reconnect_initial: Option<Spanned<f64>>,
    reconnect_max: Option<Spanned<f64>>,
    connect_timeout: Option<Spanned<f64>>,
    preflight_timeout: Option<Spanned<f64>>,
    keepalive_interval: Option<Spanned<f64>>,
    probe: Option<Spanned<RawProbe>>,
    probe_interval: Option<Spanned<f64>>,
    probe_timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    tcp: Option<Spanned<bool>>,
    http: Option<Spanned<RawHttpProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpProbe {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(u16),
    Name(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAuth {
    mode: Option<AuthMode>,
    allow_anonymous_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCluster {
    name: Option<Spanned<String>>,
    kubeconfig: Option<Spanned<PathBuf>>,
    context: Option<Spanned<String>>,
    all_contexts: Option<Spanned<bool>>,
    server: Option<Spanned<String>>,
    certificate_authority: Option<Spanned<PathBuf>>,
    token_file: Option<Spanned<PathBuf>>,
    in_cluster: Option<Spanned<bool>>,
}

/// The name of the `inCluster: true` entry without a `name`, and of the cluster discovered in a
/// pod without a config file's `clusters`.
pub const IN_CLUSTER: &str = "in-cluster";

/// Reads and validates a config file. Relative paths in it are relative to the file's folder.
pub fn load(file: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
    parse(file, &text)
}

/// Validates a config file's text (`file` names it in errors and anchors relative paths).
pub fn parse(file: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let at_position = |line: u64, column: u64, key: &str, message: String| ConfigError::At { file: file.to_owned(), line, column, key: key.to_owned(), message };
    let at = |location: Location, key: &str, message: String| at_position(location.line(), location.column(), key, message);
    // An empty file is an empty config.
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|error| {
        let error = error.without_snippet();
        let location = error.location().unwrap_or(Location::UNKNOWN);
        let key = key_on_line(text, location.line());
        let message = error.to_string();
        // The library's message ends with its own "at line L column C": the prefix says it.
        let mut message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        if let Some(hint) = hint(&key) {
            message = format!("{message}: {hint}");
        }
        at(location, &key, message)
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let resolve = |path: &Path| if path.is_absolute() { path.to_owned() } else { base.join(path) };
    let existing_file = |spanned: &Spanned<PathBuf>, key: &str| {
        let path = resolve(&spanned.value);
        if path.is_file() { Ok(path) } else { Err(at(spanned.referenced, key, format!("no such file: {} (give the path of a readable file)", path.display()))) }
    };
    let seconds = |spanned: &Option<Spanned<f64>>, key: &str| -> Result<Option<Duration>, ConfigError> {
        let Some(spanned) = spanned else { return Ok(None) };
        seconds(spanned.value).map(Some).map_err(|message| at(spanned.referenced, key, message))
    };
    let listen = match &raw.listen {
        None => None,
        Some(spanned) => {
            Some(spanned.value.parse::<SocketAddr>().map_err(|_| at(spanned.referenced, "listen", format!("{:?} is not an address: give IP:PORT, like 127.0.0.1:8080 or [::1]:8080", spanned.value)))?)
        }
    };
    let static_dir = match &raw.static_dir {
        None => None,
        Some(spanned) => {
            let path = resolve(&spanned.value);
            if !path.is_dir() {
                return Err(at(spanned.referenced, "static", format!("no such directory: {} (give the folder of a built web app)", path.display())));
            }
            Some(path)
        }
    };
    let clusters = match &raw.clusters {
        None => None,
        Some(entries) => {
            let mut sources = Vec::new();
            let mut seen: HashMap<String, Location> = HashMap::new();
            for (index, entry) in entries.iter().enumerate() {
                let key = |field: &str| format!("clusters[{index}].{field}");
                let cluster = &entry.value;
                let mut named = |name: String, location: Location, key: String, source: ClusterSource| -> Result<(), ConfigError> {
                    if let Some(first) = seen.get(&name) {
                        return Err(at(location, &key, format!("duplicate cluster name {name:?} (first at line {} column {}): cluster names must be unique", first.line(), first.column())));
                    }
                    seen.insert(name, location);
                    sources.push(source);
                    Ok(())
                };
                // The pod's own cluster, from its service account: named `in-cluster` unless
                // named, and nothing else to say about it.
                if let Some(in_cluster) = &cluster.in_cluster {
                    if !in_cluster.value {
                        return Err(at(in_cluster.referenced, &key("inCluster"), "only true: leave it out for a cluster given by kubeconfig or server".to_owned()));
                    }
                    let others = [
                        ("kubeconfig", cluster.kubeconfig.as_ref().map(|v| v.referenced)),
                        ("server", cluster.server.as_ref().map(|v| v.referenced)),
                        ("context", cluster.context.as_ref().map(|v| v.referenced)),
                        ("allContexts", cluster.all_contexts.as_ref().map(|v| v.referenced)),
                        ("certificateAuthority", cluster.certificate_authority.as_ref().map(|v| v.referenced)),
                        ("tokenFile", cluster.token_file.as_ref().map(|v| v.referenced)),
                    ];
                    if let Some((field, Some(location))) = others.into_iter().find(|(_, present)| present.is_some()) {
                        return Err(at(location, &key(field), format!("an inCluster entry uses the pod's service account and KUBERNETES_SERVICE_HOST: drop {field}")));
                    }
                    let (name, location, field) = match &cluster.name {
                        Some(name) => (name.value.clone(), name.referenced, "name"),
                        None => (IN_CLUSTER.to_owned(), in_cluster.referenced, "inCluster"),
                    };
                    named(name.clone(), location, key(field), ClusterSource::InCluster { name })?;
                    continue;
                }
                let all_contexts = cluster.all_contexts.as_ref().is_some_and(|a| a.value);
                match (&cluster.kubeconfig, &cluster.server) {
                    (Some(_), Some(server)) => return Err(at(server.referenced, &key("server"), "give either kubeconfig or server, not both".to_owned())),
                    (None, None) => return Err(at(entry.referenced, &format!("clusters[{index}]"), "a cluster needs kubeconfig (a file), server (a URL) or inCluster: true".to_owned())),
                    (Some(path), None) => {
                        let path_value = existing_file(path, &key("kubeconfig"))?;
                        let kubeconfig = Kubeconfig::read_from(&path_value).map_err(|e| at(path.referenced, &key("kubeconfig"), format!("not a kubeconfig: {e}")))?;
                        if all_contexts {
                            if let Some(name) = &cluster.name {
                                return Err(at(name.referenced, &key("name"), "an allContexts entry names its clusters after the contexts: drop name".to_owned()));
                            }
                            if let Some(context) = &cluster.context {
                                return Err(at(context.referenced, &key("context"), "an allContexts entry takes every context: drop context".to_owned()));
                            }
                            for context in &kubeconfig.contexts {
                                let source =
                                    ClusterSource::Kubeconfig { name: context.name.clone(), kubeconfig: kubeconfig.clone(), context: Some(context.name.clone()), file: Some(path_value.clone()) };
                                named(context.name.clone(), entry.referenced, key("allContexts"), source)?;
                            }
                            continue;
                        }
                        let Some(name) = &cluster.name else { return Err(at(entry.referenced, &key("name"), "missing: every cluster needs a name (or allContexts: true)".to_owned())) };
                        let context = match &cluster.context {
                            None => {
                                if kubeconfig.current_context.is_none() {
                                    return Err(at(path.referenced, &key("context"), format!("{} has no current context: give context", path_value.display())));
                                }
                                None
                            }
                            Some(context) => {
                                if !kubeconfig.contexts.iter().any(|c| c.name == context.value) {
                                    let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
                                    return Err(at(context.referenced, &key("context"), format!("no context {:?} in {}: valid: {known:?}", context.value, path_value.display())));
                                }
                                Some(context.value.clone())
                            }
                        };
                        named(name.value.clone(), name.referenced, key("name"), ClusterSource::Kubeconfig { name: name.value.clone(), kubeconfig, context, file: Some(path_value) })?;
                    }
                    (None, Some(server)) => {
                        for (field, present) in [("context", cluster.context.as_ref().map(|c| c.referenced)), ("allContexts", cluster.all_contexts.as_ref().map(|c| c.referenced))] {
                            if let Some(location) = present {
                                return Err(at(location, &key(field), "only for an entry with kubeconfig".to_owned()));
                            }
                        }
                        let url = server.value.parse::<http::Uri>().ok().filter(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some());
                        if url.is_none() {
                            return Err(at(server.referenced, &key("server"), format!("{:?} is not a URL: give https://HOST[:PORT]", server.value)));
                        }
                        let certificate_authority = cluster.certificate_authority.as_ref().map(|ca| existing_file(ca, &key("certificateAuthority"))).transpose()?;
                        let token_file = cluster.token_file.as_ref().map(|t| existing_file(t, &key("tokenFile"))).transpose()?;
                        let Some(name) = &cluster.name else { return Err(at(entry.referenced, &key("name"), "missing: every cluster needs a name".to_owned())) };
                        let source = ClusterSource::Server { name: name.value.clone(), server: server.value.clone(), certificate_authority, token_file };
                        named(name.value.clone(), name.referenced, key("name"), source)?;
                    }
                }
            }
            Some(sources)
        }
    };
    let forwards = match &raw.forwards {
        None => None,
        Some(entries) => Some(forwards(file, entries, &at)?),
    };
    Ok(FileConfig {
        forwards,
        listen,
        allowed_origins: raw.allowed_origins,
        auth_mode: raw.auth.as_ref().and_then(|a| a.mode),
        allow_anonymous_remote: raw.auth.as_ref().and_then(|a| a.allow_anonymous_remote),
        clusters,
        max_subscriptions: raw.max_subscriptions,
        max_message_bytes: raw.max_message_bytes,
        max_queued_bytes: raw.max_queued_bytes,
        deflate: raw.deflate,
        deflate_idle_release: seconds(&raw.deflate_idle_release, "deflateIdleRelease")?,
        history: raw.history,
        upstream_idle_timeout: seconds(&raw.upstream_idle_timeout, "upstreamIdleTimeout")?,
        linger: seconds(&raw.linger, "linger")?,
        terminal_grace: seconds(&raw.terminal_grace, "terminalGrace")?,
        terminal_ping_interval: seconds(&raw.terminal_ping_interval, "terminalPingInterval")?,
        health_interval: seconds(&raw.health_interval, "healthInterval")?,
        drain_period: seconds(&raw.drain_period, "drainPeriod")?,
        static_dir,
    })
}

/// Validates `forwards`: names unique, the keys every forward needs, targets and ports that
/// parse, and no two forwards on one local address. Whether its cluster exists is checked when
/// the clusters are known (`forward::Forwards::stage`), naming the entry's `origin`.
fn forwards(file: &Path, entries: &[Spanned<RawForward>], at: &dyn Fn(Location, &str, String) -> ConfigError) -> Result<Vec<ForwardSpec>, ConfigError> {
    let mut specs: Vec<ForwardSpec> = Vec::new();
    let mut names: HashMap<String, Location> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, (String, Location)> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let key = |field: &str| format!("forwards[{index}].{field}");
        let raw = &entry.value;
        let missing = |field: &str, what: &str| at(entry.referenced, &key(field), format!("missing: every forward needs {field} ({what})"));
        let Some(name) = &raw.name else { return Err(missing("name", "unique, its id everywhere")) };
        let Some(cluster) = &raw.cluster else { return Err(missing("cluster", "a cluster's name")) };
        let Some(target) = &raw.target else { return Err(missing("target", "service/NAME, deployment/NAME, statefulset/NAME, pod/NAME or a label selector")) };
        let Some(port) = &raw.port else { return Err(missing("port", "a service or container port, by number or name")) };
        let Some(local_port) = &raw.local_port else { return Err(missing("localPort", "the local port, 0 for any free one")) };
        if name.value.is_empty() || name.value.len() > 63 || !name.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(at(name.referenced, &key("name"), format!("{:?} is not a forward name: give 1 to 63 letters, digits, '-', '_' or '.'", name.value)));
        }
        if let Some(first) = names.get(&name.value) {
            return Err(at(name.referenced, &key("name"), format!("duplicate forward name {:?} (first at line {} column {}): forward names must be unique", name.value, first.line(), first.column())));
        }
        names.insert(name.value.clone(), name.referenced);
        let target_value = Target::parse(&target.value).map_err(|message| at(target.referenced, &key("target"), message))?;
        let port_value = match &port.value {
            RawPort::Number(0) => return Err(at(port.referenced, &key("port"), "0 is not a port: give 1 to 65535 or a port name".to_owned())),
            RawPort::Number(n) => PortRef::Number(*n),
            RawPort::Name(name) if !name.is_empty() && name.len() <= 15 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => PortRef::Name(name.clone()),
            RawPort::Name(name) => return Err(at(port.referenced, &key("port"), format!("{name:?} is not a port: give 1 to 65535 or a port name (lowercase letters, digits and '-', up to 15)"))),
        };
        let mut spec = ForwardSpec::new(&name.value, &cluster.value, "default", target_value, port_value, local_port.value);
        if let Some(namespace) = &raw.namespace {
            spec.namespace = namespace.value.clone();
        }
        if let Some(bind) = &raw.bind {
            spec.bind = bind.value.parse().map_err(|_| at(bind.referenced, &key("bind"), format!("{:?} is not an IP address: give one like 127.0.0.1 or ::1", bind.value)))?;
        }
        for (field, slot, value) in [
            ("reconnectInitial", &mut spec.reconnect_initial, &raw.reconnect_initial),
            ("reconnectMax", &mut spec.reconnect_max, &raw.reconnect_max),
            ("connectTimeout", &mut spec.connect_timeout, &raw.connect_timeout),
            ("preflightTimeout", &mut spec.preflight_timeout, &raw.preflight_timeout),
            ("keepaliveInterval", &mut spec.keepalive, &raw.keepalive_interval),
            ("probeInterval", &mut spec.probe_interval, &raw.probe_interval),
            ("probeTimeout", &mut spec.probe_timeout, &raw.probe_timeout),
        ] {
            if let Some(value) = value {
                *slot = seconds(value.value).map_err(|message| at(value.referenced, &key(field), message))?;
            }
        }
        if let Some(probe) = &raw.probe {
            spec.probe = self::probe(&probe.value, &|location, field, message| at(location, &key(field), message))?;
        }
        for (field, value, raw_value) in [
            ("probeInterval", spec.probe_interval, &raw.probe_interval),
            ("probeTimeout", spec.probe_timeout, &raw.probe_timeout),
            ("preflightTimeout", spec.preflight_timeout, &raw.preflight_timeout),
        ] {
            if value.is_zero()
                && let Some(raw_value) = raw_value
            {
                return Err(at(raw_value.referenced, &key(field), "must be more than 0 seconds".to_owned()));
            }
        }
        if spec.reconnect_max < spec.reconnect_initial {
            let location = raw.reconnect_max.as_ref().map_or(entry.referenced, |r| r.referenced);
            return Err(at(location, &key("reconnectMax"), "must be at least reconnectInitial".to_owned()));
        }
        if spec.local_port != 0 {
            if let Some((other, first)) = addresses.get(&spec.local_addr()) {
                return Err(at(
                    local_port.referenced,
                    &key("localPort"),
                    format!("{} is forward {other:?}'s too (line {} column {}): two forwards cannot share a local address", spec.local_addr(), first.line(), first.column()),
                ));
            }
            addresses.insert(spec.local_addr(), (spec.name.clone(), local_port.referenced));
        }
        spec.origin = Origin(format!("{}:{}:{}: forwards[{index}]", file.display(), entry.referenced.line(), entry.referenced.column()));
        specs.push(spec);
    }
    Ok(specs)
}

/// A forward's `probe:`: `{tcp: true}` or `{http: {path: /healthz}}` (`path` defaults to
/// `/`); `{tcp: false}` or `{}` is no probe.
fn probe(raw: &RawProbe, at: &dyn Fn(Location, &str, String) -> ConfigError) -> Result<Option<Probe>, ConfigError> {
    let tcp = raw.tcp.as_ref().is_some_and(|t| t.value);
    match (tcp, &raw.http) {
        (true, Some(http)) => Err(at(http.referenced, "probe", "give one of tcp: true or http: {path: ...}, not both".to_owned())),
        (true, None) => Ok(Some(Probe::Tcp)),
        (false, None) => Ok(None),
        (false, Some(http)) => {
            let Some(path) = &http.value.path else { return Ok(Some(Probe::Http { path: "/".to_owned() })) };
            let valid = path.value.starts_with('/') && path.value.parse::<http::uri::PathAndQuery>().is_ok();
            if !valid {
                return Err(at(path.referenced, "probe.http.path", format!("{:?} is not a request path: give one starting with /, like /healthz", path.value)));
            }
            Ok(Some(Probe::Http { path: path.value.clone() }))
        }
    }
}

/// A number of seconds as a duration: refuses negative, NaN, infinite and too-large values
/// with a message saying what is valid (the flags' value parser too).
pub fn seconds(value: f64) -> Result<Duration, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{value} is not a duration: give a finite number of seconds, 0 or more (like 5 or 0.5)"));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("{value} seconds is too long: give a finite number of seconds, 0 or more (like 5 or 0.5)"))
}

/// `seconds` for clap: parses the flag's text first.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds (like 5 or 0.5)"))?;
    seconds(value)
}

/// What a key takes, for type errors whose message names only the type.
fn hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "maxSubscriptions" | "maxMessageBytes" | "maxQueuedBytes" | "history" => "give a whole number, 0 or more",
        "upstreamIdleTimeout" | "deflateIdleRelease" | "linger" | "terminalGrace" | "terminalPingInterval" | "healthInterval" | "drainPeriod" => "give a number of seconds, 0 or more",
        "allowAnonymousRemote" | "allContexts" | "deflate" => "give true or false",
        "allowedOrigins" => "give a list of origins, like [\"https://dash.example.com\"]",
        "clusters" => "give a list of clusters, each a mapping with name and kubeconfig or server",
        "forwards" => "give a list of forwards, each a mapping with name, cluster, target, port and localPort",
        "localPort" => "give a port number, 0 to 65535 (0: any free port)",
        "reconnectInitial" | "reconnectMax" | "connectTimeout" | "keepaliveInterval" => "give a number of seconds, 0 or more",
        "probeInterval" | "probeTimeout" | "preflightTimeout" => "give a number of seconds, more than 0",
        "probe" => "give tcp: true or http: {path: /healthz}",
        "tcp" => "give true or false",
        _ => return None,
    })
}

/// The key written on a 1-based line, for errors the YAML library reports by position only.
fn key_on_line(text: &str, line: u64) -> String {
    let Some(content) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)).and_then(|l| text.lines().nth(l)) else { return String::new() };
    let content = content.trim_start().trim_start_matches("- ").trim_start();
    match content.split_once(':') {
        Some((key, _)) if !key.is_empty() && !key.contains(['{', '[', '"', ' ']) => key.to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
