//! The simulated kubelet's pod table: for every live pod, one real TCP listener on
//! `127.0.0.1:0` per container port (an echo server), which is what `portforward` reaches.
//!
//! A container "restarts" when its `restartCount` changes, and a pod is replaced when its uid
//! changes: both stop the old listeners and end their connections. The table only decides;
//! killing processes is the caller's job, driven by the [`Stop`]s it returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::options::{pod_phase, pod_uid};

/// How many deleted pod uids are remembered, so a late event or request cannot revive one.
const TOMBSTONES: usize = 4096;

/// An incarnation whose processes must die: a whole pod, or one container of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Pod uid.
    pub uid: String,
    /// The container, or `None` for every container of the pod.
    pub container: Option<String>,
}

struct ContainerState {
    restart_count: u64,
    ports: Vec<u16>,
    listeners: BTreeMap<u16, SocketAddr>,
    token: CancellationToken,
}

struct PodState {
    uid: String,
    token: CancellationToken,
    containers: BTreeMap<String, ContainerState>,
}

#[derive(Default)]
struct Table {
    stopped: bool,
    pods: HashMap<(String, String), PodState>,
    tombstones: VecDeque<String>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct PodTable {
    table: Mutex<Table>,
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
}

/// The TCP container ports of each regular container, and its restart count.
fn desired_containers(pod: &Value) -> Vec<(String, Vec<u16>, u64)> {
    let restarts: HashMap<&str, u64> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.get("name")?.as_str()?, s.get("restartCount").and_then(Value::as_u64).unwrap_or(0))))
        .collect();
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?;
            let mut ports: Vec<u16> = c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p.get("protocol").and_then(Value::as_str).is_none_or(|proto| proto == "TCP"))
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()))
                .filter(|p| *p > 0)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            Some((name.to_owned(), ports, restarts.get(name).copied().unwrap_or(0)))
        })
        .collect()
}

impl PodTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the pod incarnation `uid` was deleted.
    pub fn is_deleted(&self, uid: &str) -> bool {
        !uid.is_empty() && self.lock().tombstones.iter().any(|t| t == uid)
    }

    /// Brings the table in line with one pod object (added, modified, or seen on a resync or
    /// by a request that got there before the event). Must run inside a tokio runtime.
    pub fn sync_pod(&self, pod: &Value, stop: &CancellationToken) -> Vec<Stop> {
        let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let uid = pod_uid(pod);
        let mut table = self.lock();
        if table.stopped || (!uid.is_empty() && table.tombstones.iter().any(|t| t == uid)) {
            return Vec::new();
        }
        let mut stops = Vec::new();
        let k = key(namespace, name);
        if let Some(old) = table.pods.get(&k)
            && old.uid != uid
        {
            // Same name, new pod: the old one's containers are gone.
            if let Some(old) = table.pods.remove(&k) {
                old.token.cancel();
                stops.push(Stop { uid: old.uid, container: None });
            }
        }
        if matches!(pod_phase(pod), "Succeeded" | "Failed") {
            // Every container has exited: nothing listens any more, nothing runs.
            if let Some(old) = table.pods.remove(&k) {
                old.token.cancel();
                stops.push(Stop { uid: old.uid, container: None });
            }
            return stops;
        }
        let state = table.pods.entry(k).or_insert_with(|| PodState {
            uid: uid.to_owned(),
            token: stop.child_token(),
            containers: BTreeMap::new(),
        });
        let desired = desired_containers(pod);
        state.containers.retain(|name, container| {
            let keep = desired.iter().any(|(n, _, _)| n == name);
            if !keep {
                container.token.cancel();
                stops.push(Stop { uid: uid.to_owned(), container: Some(name.clone()) });
            }
            keep
        });
        for (container_name, ports, restart_count) in desired {
            if let Some(current) = state.containers.get(&container_name) {
                if current.restart_count == restart_count && current.ports == ports {
                    continue;
                }
                // A restart: the old container's listeners, connections and processes end.
                current.token.cancel();
                stops.push(Stop { uid: uid.to_owned(), container: Some(container_name.clone()) });
            }
            let token = state.token.child_token();
            let listeners = ports.iter().filter_map(|port| start_listener(*port, &token).map(|addr| (*port, addr))).collect();
            state.containers.insert(container_name, ContainerState { restart_count, ports, listeners, token });
        }
        stops
    }

    /// The pod was deleted: stop it and remember its uid. Processes of that uid must die even
    /// if this table never saw the pod (an exec may have raced the first event).
    pub fn delete_pod(&self, namespace: &str, name: &str, uid: &str) -> Vec<Stop> {
        let mut table = self.lock();
        let k = key(namespace, name);
        if table.pods.get(&k).is_some_and(|p| p.uid == uid)
            && let Some(old) = table.pods.remove(&k)
        {
            old.token.cancel();
        }
        if !uid.is_empty() && !table.tombstones.iter().any(|t| t == uid) {
            if table.tombstones.len() == TOMBSTONES {
                table.tombstones.pop_front();
            }
            table.tombstones.push_back(uid.to_owned());
        }
        vec![Stop { uid: uid.to_owned(), container: None }]
    }

    /// After missed events: sync every listed pod and drop every tracked pod that is no
    /// longer listed (it was deleted while we were not looking).
    pub fn resync(&self, pods: &[std::sync::Arc<Value>], stop: &CancellationToken) -> Vec<Stop> {
        let mut stops = Vec::new();
        for pod in pods {
            stops.extend(self.sync_pod(pod, stop));
        }
        let listed: Vec<(String, String, String)> = pods
            .iter()
            .map(|p| {
                let ns = p.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                (ns.to_owned(), name.to_owned(), pod_uid(p).to_owned())
            })
            .collect();
        let vanished: Vec<(String, String, String)> = self
            .lock()
            .pods
            .iter()
            .filter(|((ns, name), state)| !listed.iter().any(|(n, m, u)| n == ns && m == name && *u == state.uid))
            .map(|((ns, name), state)| (ns.clone(), name.clone(), state.uid.clone()))
            .collect();
        for (ns, name, uid) in vanished {
            stops.extend(self.delete_pod(&ns, &name, &uid));
        }
        stops
    }

    /// The address of the listener for `port` of pod incarnation `uid`, and the token that
    /// ends with that container.
    pub fn listener(&self, namespace: &str, name: &str, uid: &str, port: u16) -> Option<(SocketAddr, CancellationToken)> {
        let table = self.lock();
        let pod = table.pods.get(&key(namespace, name)).filter(|p| p.uid == uid)?;
        pod.containers.values().find_map(|c| c.listeners.get(&port).map(|addr| (*addr, c.token.clone())))
    }

    /// The token that ends with pod incarnation `uid`, if it is live.
    pub fn lifetime(&self, namespace: &str, name: &str, uid: &str) -> Option<CancellationToken> {
        let table = self.lock();
        table.pods.get(&key(namespace, name)).filter(|p| p.uid == uid).map(|p| p.token.clone())
    }

    /// Stops every listener and refuses new ones. Idempotent.
    pub fn stop_all(&self) {
        let mut table = self.lock();
        table.stopped = true;
        for (_, pod) in table.pods.drain() {
            pod.token.cancel();
        }
    }

    /// Every listener, for diagnostics.
    pub fn to_json(&self) -> Value {
        let table = self.lock();
        let mut out = Vec::new();
        for ((namespace, name), pod) in &table.pods {
            for (container, state) in &pod.containers {
                for (port, addr) in &state.listeners {
                    out.push(json!({"namespace": namespace, "pod": name, "uid": pod.uid, "container": container,
                                    "containerPort": port, "address": addr.to_string()}));
                }
            }
        }
        out.sort_by_key(|v| v.to_string());
        Value::Array(out)
    }
}

/// Binds an echo server for one container port. Synchronous bind, so the address is known
/// before the caller returns; the accept loop runs until `token` is cancelled.
fn start_listener(port: u16, token: &CancellationToken) -> Option<SocketAddr> {
    let bound = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std);
    let listener = match bound {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, port, "cannot start a pod port listener");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    tokio::spawn(serve_echo(listener, token.clone()));
    Some(addr)
}

async fn serve_echo(listener: TcpListener, token: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let token = token.clone();
                tokio::spawn(async move {
                    // Cancelling drops the socket: the connection ends with the container.
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = echo(socket) => {}
                    }
                });
            }
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!(%error, "accept failed on a pod port");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn echo(mut socket: TcpStream) {
    let (mut read, mut write) = socket.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pod(uid: &str, restarts: u64, phase: &str) -> Value {
        json!({"metadata": {"namespace": "ns", "name": "web", "uid": uid},
               "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
                                       {"name": "side"}]},
               "status": {"phase": phase, "containerStatuses": [{"name": "app", "restartCount": restarts}]}})
    }

    async fn echo_roundtrip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn listeners_follow_the_pod_lifecycle() {
        let table = PodTable::default();
        let stop = CancellationToken::new();
        assert!(table.sync_pod(&pod("u1", 0, "Running"), &stop).is_empty());
        let (addr, token) = table.listener("ns", "web", "u1", 8080).unwrap();
        assert!(table.listener("ns", "web", "u1", 53).is_none(), "UDP ports get no TCP listener");
        assert_eq!(echo_roundtrip(addr).await.unwrap(), b"ping");

        // An open connection ends when the container restarts.
        let mut open = TcpStream::connect(addr).await.unwrap();
        let stops = table.sync_pod(&pod("u1", 1, "Running"), &stop);
        assert_eq!(stops, [Stop { uid: "u1".into(), container: Some("app".into()) }]);
        assert!(token.is_cancelled());
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)));
        let (new_addr, _) = table.listener("ns", "web", "u1", 8080).unwrap();
        assert_ne!(new_addr, addr);
        assert_eq!(echo_roundtrip(new_addr).await.unwrap(), b"ping");

        // Deletion stops everything and the uid cannot come back.
        assert_eq!(table.delete_pod("ns", "web", "u1"), [Stop { uid: "u1".into(), container: None }]);
        assert!(table.listener("ns", "web", "u1", 8080).is_none());
        assert!(table.is_deleted("u1"));
        assert!(table.sync_pod(&pod("u1", 1, "Running"), &stop).is_empty());
        assert!(table.listener("ns", "web", "u1", 8080).is_none());
        // The listener is closed (the accept loop ended).
        tokio::time::timeout(Duration::from_secs(5), async {
            while echo_roundtrip(new_addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn recreated_and_completed_pods() {
        let table = PodTable::default();
        let stop = CancellationToken::new();
        table.sync_pod(&pod("u1", 0, "Running"), &stop);
        // Same name, new uid: the old incarnation stops.
        let stops = table.sync_pod(&pod("u2", 0, "Running"), &stop);
        assert_eq!(stops, [Stop { uid: "u1".into(), container: None }]);
        assert!(table.listener("ns", "web", "u2", 8080).is_some());
        let stops = table.sync_pod(&pod("u2", 0, "Succeeded"), &stop);
        assert_eq!(stops, [Stop { uid: "u2".into(), container: None }]);
        assert!(table.lifetime("ns", "web", "u2").is_none());
        // Resync drops pods that vanished.
        table.sync_pod(&pod("u3", 0, "Running"), &stop);
        let stops = table.resync(&[], &stop);
        assert_eq!(stops, [Stop { uid: "u3".into(), container: None }]);
        table.stop_all();
        assert!(table.sync_pod(&pod("u4", 0, "Running"), &stop).is_empty());
        assert_eq!(table.to_json(), json!([]));
    }
}
