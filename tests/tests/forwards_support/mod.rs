//! What the forward-manager tests share: a folder with the simulator's kubeconfig, the config
//! file written as editors save it, the proxy in-process, and clients that count failed
//! connections.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::kubeconfig;
use kubemux_proxy::config::FileSource;
use kubemux_proxy::forward::worker::{ForwardStatus, State};
use kubemux_proxy::{Proxy, ProxySettings};
use kubemux_testkit::wait::{changed_until, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A folder of its own with the simulator's kubeconfig (`token`: as which user).
pub fn folder(name: &str, sim: &Sim, token: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubemux-forwards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = kubeconfig(&[("sim", &sim.url(), token)]);
    std::fs::write(dir.join("sim.kubeconfig"), serde_json::to_string(&config).unwrap()).unwrap();
    dir
}

/// The config file: the simulator as cluster `sim`, and these forwards (YAML list entries).
pub fn write_config(dir: &Path, forwards: &str) {
    write_config_with(dir, "", forwards);
}

/// [`write_config`] with more clusters (YAML list entries) after `sim`.
pub fn write_config_with(dir: &Path, clusters: &str, forwards: &str) {
    let text = format!("clusters:\n  - name: sim\n    kubeconfig: sim.kubeconfig\n{clusters}forwards:{}\n", if forwards.is_empty() { " []".to_owned() } else { format!("\n{forwards}") });
    // Saved by rename, as editors do, so the proxy's watch never reads half a file.
    std::fs::write(dir.join("proxy.yaml.tmp"), text).unwrap();
    std::fs::rename(dir.join("proxy.yaml.tmp"), dir.join("proxy.yaml")).unwrap();
}

pub fn forward(name: &str, namespace: &str, target: &str, port: &str, local_port: u16) -> String {
    format!("  - name: {name}\n    cluster: sim\n    namespace: {namespace}\n    target: {target}\n    port: {port}\n    localPort: {local_port}\n    reconnectInitial: 0.2\n    reconnectMax: 1\n")
}

pub async fn start(dir: &Path) -> Proxy {
    let base = ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() };
    let source = FileSource { file: dir.join("proxy.yaml"), base, pinned: Box::new(|s| s) };
    Proxy::start_live(Box::new(source)).await.expect("the proxy starts")
}

pub async fn sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 0.0, users, ..SimConfig::default() }).await.unwrap()
}

/// Waits for a forward's status to satisfy `wanted`.
pub async fn status_until(proxy: &Proxy, name: &str, what: &str, wanted: impl FnMut(&ForwardStatus) -> bool) -> ForwardStatus {
    let mut status = proxy.app().forwards.status(name).unwrap_or_else(|| panic!("no forward {name}"));
    changed_until(&mut status, Duration::from_secs(15), what, wanted).await
}

pub async fn active(proxy: &Proxy, name: &str) -> ForwardStatus {
    status_until(proxy, name, &format!("forward {name} Active"), |s| s.state == State::Active).await
}

/// One connection through the forward: `payload` out, its echo back, then close.
pub async fn echo(port: u16, payload: &[u8]) -> Result<(), String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = socket.split();
    let send = async {
        write.write_all(payload).await.map_err(|e| format!("write: {e}"))?;
        Ok::<_, String>(())
    };
    let receive = async {
        let mut back = vec![0u8; payload.len()];
        read.read_exact(&mut back).await.map_err(|e| format!("read after {} bytes: {e}", payload.len()))?;
        if back != payload { Err("the echo differs from what was sent".to_owned()) } else { Ok(()) }
    };
    // An echo that neither arrives nor fails within the deadline is a failure too.
    match tokio::time::timeout(Duration::from_secs(15), async { tokio::join!(send, receive) }).await {
        Ok((sent, received)) => sent.and(received),
        Err(_) => Err(format!("no echo of {} bytes, and no error, within 15 s", payload.len())),
    }
}

/// Two clients opening connections back to back, each an echo, until told to stop; every
/// failure is kept.
pub struct Clients {
    stop: Arc<AtomicBool>,
    done: Arc<tokio::sync::watch::Sender<u64>>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    pub fn start(port: u16) -> Clients {
        let (stop, done, failures) = (Arc::new(AtomicBool::new(false)), Arc::new(tokio::sync::watch::Sender::new(0u64)), Arc::new(std::sync::Mutex::new(Vec::new())));
        let tasks = (0..2u8)
            .map(|client| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                tokio::spawn(async move {
                    let payload = pattern(4096, client);
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_secs(20), echo(port, &payload)).await {
                            Ok(Ok(())) => done.send_modify(|n| *n += 1),
                            Ok(Err(why)) => failures.lock().unwrap().push(why),
                            Err(_) => failures.lock().unwrap().push("an echo took over 20 s".to_owned()),
                        }
                    }
                })
            })
            .collect();
        Clients { stop, done, failures, tasks }
    }

    /// Waits for `count` more successful connections.
    pub async fn more(&self, count: u64, what: &str) {
        let before = *self.done.borrow();
        changed_until(&mut self.done.subscribe(), Duration::from_secs(10), what, |n| *n >= before + count).await;
    }

    /// Stops the clients; fails the test if any connection failed. Returns how many succeeded.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            within("the clients to stop", task).await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        let done = *self.done.borrow();
        assert!(failures.is_empty(), "{} failed connections of {}: {failures:?}", failures.len(), done + failures.len() as u64);
        done
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

pub fn forwards_json(proxy: &Proxy) -> Vec<Value> {
    proxy.app().forwards.to_json().as_array().cloned().unwrap_or_default()
}

/// One echo on a connection held open.
pub async fn exchange(socket: &mut TcpStream, text: &[u8]) {
    socket.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    within("an echo on the held connection", socket.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, text);
}

/// A free local port, for a forward with a fixed one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads until the other side closes (or breaks) the connection.
pub async fn closed(socket: &mut TcpStream, what: &str) {
    let mut buffer = [0u8; 1];
    let read = within(what, socket.read(&mut buffer)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
}
