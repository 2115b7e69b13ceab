//! What a forward is: its configuration (`forwards:` in the config file), and the pure rules
//! that turn a target and a port into the pods and the container port to reach. No I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

/// One configured forward.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSpec {
    /// Unique; the id in `/forwards`, metrics and logs.
    pub name: String,
    /// The cluster (a name of `clusters`).
    pub cluster: String,
    /// The namespace of the target. Default `default`.
    pub namespace: String,
    /// What to reach.
    pub target: Target,
    /// The port: a service port (mapped to its `targetPort`) for a service, else a container
    /// port; a number or a port name.
    pub port: PortRef,
    /// The local port; 0 picks a free one (`/forwards` shows which).
    pub local_port: u16,
    /// The local address. Default 127.0.0.1.
    pub bind: IpAddr,
    /// First reconnect delay after an upstream failure (doubles, with jitter). Default 1 s.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay. Default 10 s.
    pub reconnect_max: Duration,
    /// How long an accepted connection waits for a Ready pod (during a restart or a rollout)
    /// before it is closed. Default 30 s.
    pub connect_timeout: Duration,
    /// How long the access reviews (`forward::access`) may take before the forward counts as
    /// unchecked (applied, asked again by its worker). Default 5 s.
    pub preflight_timeout: Duration,
    /// How often a carried connection pings its tunnel (zero: never). Below the idle limits of
    /// load balancers and kubelets, so a quiet connection is never cut; two intervals without
    /// a word from the tunnel close the connection. Default 15 s.
    pub keepalive: Duration,
    /// An optional probe into the app (`probe:`), off by default: no connection reaches the
    /// app but the clients'.
    pub probe: Option<Probe>,
    /// How often the probe runs. Default 10 s.
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as failed. Default 2 s.
    pub probe_timeout: Duration,
    /// Where the entry is written, for errors found after parsing. Never part of equality:
    /// moving an entry in its file does not change the forward.
    pub origin: Origin,
}

impl ForwardSpec {
    /// A forward with every default but what is given.
    pub fn new(name: &str, cluster: &str, namespace: &str, target: Target, port: PortRef, local_port: u16) -> ForwardSpec {
        ForwardSpec {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            target,
            port,
            local_port,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            preflight_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
            probe: None,
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(2),
            origin: Origin::default(),
        }
    }

    /// The `Host` a request to the target names: the service's DNS name for a service, else
    /// `localhost` (as through `kubectl port-forward`), with the port unless it is 80 or a name.
    pub fn host(&self) -> String {
        let name = match &self.target {
            Target::Service(name) => format!("{name}.{}.svc", self.namespace),
            _ => "localhost".to_owned(),
        };
        match self.port {
            PortRef::Number(port) if port != 80 => format!("{name}:{port}"),
            _ => name,
        }
    }

    /// The local address asked for.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.local_port)
    }
}

/// A probe of a forward's app, through a tunnel to the picked pod like any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `probe: {tcp: true}`: the pod's port takes the connection. The channel protocol has no
    /// "connected" message: the API server reports a failed dial on the port's error channel
    /// at once, so a tunnel that carries no error for `probeTimeout` passes.
    Tcp,
    /// `probe: {http: {path: /healthz}}`: `GET path` answers 200–399 within `probeTimeout`
    /// (as a Kubernetes `httpGet` probe counts it).
    Http {
        /// The request path, starting with `/`.
        path: String,
    },
}

/// Where a config entry is written (`file:line:column`), or nothing for forwards built in code.
#[derive(Debug, Clone, Default)]
pub struct Origin(pub String);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a forward reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `service/NAME` (`svc/`): the Ready pods its selector picks; `port` is a service port.
    Service(String),
    /// `deployment/NAME` (`deploy/`): the Ready pods of its selector.
    Deployment(String),
    /// `statefulset/NAME` (`sts/`).
    StatefulSet(String),
    /// `pod/NAME`: that pod (and only it).
    Pod(String),
    /// A label selector (`app=web,tier!=cache`), passed to the API server as is.
    Selector(String),
}

impl Target {
    /// Parses the `target` key.
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let invalid = || format!("{text:?} is not a target: give service/NAME, deployment/NAME, statefulset/NAME, pod/NAME or a label selector like app=web");
        if let Some((kind, name)) = text.split_once('/') {
            if !valid_name(name) {
                return Err(invalid());
            }
            let name = name.to_owned();
            return match kind {
                "service" | "svc" | "services" => Ok(Target::Service(name)),
                "deployment" | "deploy" | "deployments" => Ok(Target::Deployment(name)),
                "statefulset" | "sts" | "statefulsets" => Ok(Target::StatefulSet(name)),
                "pod" | "po" | "pods" => Ok(Target::Pod(name)),
                _ => Err(invalid()),
            };
        }
        // A selector has at least one requirement with an operator or is a bare key (exists).
        if text.is_empty() || text.contains(char::is_whitespace) && !text.contains(" in ") && !text.contains(" notin ") {
            return Err(invalid());
        }
        Ok(Target::Selector(text.to_owned()))
    }

    /// The collection watched to find the pod selector, and the name in it (`None` for a pod
    /// or selector target, which watch pods directly).
    pub fn owner_collection(&self, namespace: &str) -> Option<(String, &str)> {
        match self {
            Target::Service(name) => Some((format!("/api/v1/namespaces/{namespace}/services"), name)),
            Target::Deployment(name) => Some((format!("/apis/apps/v1/namespaces/{namespace}/deployments"), name)),
            Target::StatefulSet(name) => Some((format!("/apis/apps/v1/namespaces/{namespace}/statefulsets"), name)),
            Target::Pod(_) | Target::Selector(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(name) => write!(f, "service/{name}"),
            Target::Deployment(name) => write!(f, "deployment/{name}"),
            Target::StatefulSet(name) => write!(f, "statefulset/{name}"),
            Target::Pod(name) => write!(f, "pod/{name}"),
            Target::Selector(selector) => f.write_str(selector),
        }
    }
}

/// A DNS-1123 subdomain, as Kubernetes names objects.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A port by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A number, 1–65535.
    Number(u16),
    /// A port name (`http`).
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// The label selector of an owner object (a Service's `spec.selector`, a workload's
/// `spec.selector.matchLabels` and `matchExpressions`) as selector text, or why there is none.
pub fn selector_of(target: &Target, owner: &Value) -> Result<String, String> {
    let requirements: Vec<String> = match target {
        Target::Service(name) => {
            let Some(selector) = owner.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty()) else {
                return Err(format!("service/{name} has no selector: it has no pods to forward to"));
            };
            selector.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect()
        }
        Target::Deployment(name) | Target::StatefulSet(name) => {
            let mut requirements: Vec<String> =
                owner.pointer("/spec/selector/matchLabels").and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect();
            for expression in owner.pointer("/spec/selector/matchExpressions").and_then(Value::as_array).into_iter().flatten() {
                let key = expression["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                requirements.push(match expression["operator"].as_str() {
                    Some("In") => format!("{key} in ({})", values.join(",")),
                    Some("NotIn") => format!("{key} notin ({})", values.join(",")),
                    Some("Exists") => key.to_owned(),
                    Some("DoesNotExist") => format!("!{key}"),
                    other => return Err(format!("{target}: unknown selector operator {other:?}")),
                });
            }
            if requirements.is_empty() {
                return Err(format!("{target}: {name} has an empty selector"));
            }
            requirements
        }
        Target::Pod(_) | Target::Selector(_) => return Err(format!("{target} has no owner")),
    };
    Ok(requirements.join(","))
}

/// Whether a pod takes connections: Ready, running, not being deleted.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The container port of `pod` that `port` means for `target`: for a service, its port's
/// `targetPort` (a number, or a container port name looked up in the pod); for everything
/// else, the container port itself (a name looked up in the pod).
pub fn container_port(target: &Target, owner: Option<&Value>, port: &PortRef, pod: &Value) -> Result<u16, String> {
    let named_in_pod = |name: &str| -> Result<u16, String> {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("pod {} has no container port named {name:?}", pod["metadata"]["name"].as_str().unwrap_or("?")))
    };
    match target {
        Target::Service(name) => {
            let Some(service) = owner else { return Err(format!("service/{name} is not known yet")) };
            let ports = service.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let found = ports.iter().find(|p| match port {
                PortRef::Number(n) => p["port"].as_u64() == Some(u64::from(*n)),
                PortRef::Name(wanted) => p["name"].as_str() == Some(wanted),
            });
            let Some(found) = found else { return Err(format!("service/{name} has no port {port}")) };
            match &found["targetPort"] {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0).ok_or_else(|| format!("service/{name}: invalid targetPort {n}")),
                Value::String(named) => named.parse::<u16>().or_else(|_| named_in_pod(named)),
                _ => found["port"].as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("service/{name}: invalid port")),
            }
        }
        _ => match port {
            PortRef::Number(n) => Ok(*n),
            PortRef::Name(name) => named_in_pod(name),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_parse_as_kubectl_names_them() {
        assert_eq!(Target::parse("service/web"), Ok(Target::Service("web".into())));
        assert_eq!(Target::parse("svc/web"), Ok(Target::Service("web".into())));
        assert_eq!(Target::parse("deploy/api"), Ok(Target::Deployment("api".into())));
        assert_eq!(Target::parse("sts/db"), Ok(Target::StatefulSet("db".into())));
        assert_eq!(Target::parse("pod/redis-0"), Ok(Target::Pod("redis-0".into())));
        assert_eq!(Target::parse("app=web,tier!=cache"), Ok(Target::Selector("app=web,tier!=cache".into())));
        assert_eq!(Target::parse("env in (a,b)"), Ok(Target::Selector("env in (a,b)".into())));
        for bad in ["", "job/x", "pod/", "pod/Bad_Name", "a b"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selectors_come_from_the_owner() {
        let service = json!({"spec": {"selector": {"app": "web"}, "ports": []}});
        assert_eq!(selector_of(&Target::Service("web".into()), &service), Ok("app=web".into()));
        assert!(selector_of(&Target::Service("web".into()), &json!({"spec": {}})).unwrap_err().contains("no selector"));
        let deployment =
            json!({"spec": {"selector": {"matchLabels": {"app": "api"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "x", "operator": "DoesNotExist"}]}}});
        assert_eq!(selector_of(&Target::Deployment("api".into()), &deployment), Ok("app=api,tier in (a,b),!x".into()));
    }

    #[test]
    fn service_ports_map_to_target_ports() {
        let pod = json!({"metadata": {"name": "web-1"}, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        let service = json!({"spec": {"ports": [{"name": "web", "port": 80, "targetPort": "http"}, {"port": 81, "targetPort": 9000}, {"port": 82}]}});
        let svc = Target::Service("web".into());
        assert_eq!(container_port(&svc, Some(&service), &PortRef::Number(80), &pod), Ok(8080));
        assert_eq!(container_port(&svc, Some(&service), &PortRef::Name("web".into()), &pod), Ok(8080));
        assert_eq!(container_port(&svc, Some(&service), &PortRef::Number(81), &pod), Ok(9000));
        assert_eq!(container_port(&svc, Some(&service), &PortRef::Number(82), &pod), Ok(82));
        assert!(container_port(&svc, Some(&service), &PortRef::Number(83), &pod).unwrap_err().contains("no port 83"));
        let deploy = Target::Deployment("web".into());
        assert_eq!(container_port(&deploy, None, &PortRef::Name("http".into()), &pod), Ok(8080));
        assert!(container_port(&deploy, None, &PortRef::Name("grpc".into()), &pod).is_err());
    }

    #[test]
    fn only_running_ready_pods_not_terminating_take_connections() {
        let ready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {}});
        assert!(is_ready(&ready));
        let mut terminating = ready.clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
        assert!(!is_ready(&terminating));
        assert!(!is_ready(&json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}})));
        assert!(!is_ready(&json!({"status": {"phase": "Pending"}})));
    }
}
