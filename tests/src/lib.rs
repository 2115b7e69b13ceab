//! Test harness shared by the end-to-end tests: a native client on the client core
//! ([`client`]), a proxy that can be killed and restarted ([`ProxyProcess`]), and helpers to
//! talk to kube-sim directly.

pub mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kube::config::Kubeconfig;
use kubemux_proxy::clusters::Clusters;
use kubemux_proxy::{Proxy, ProxySettings};
use serde_json::Value;
use tokio::sync::oneshot;

/// A kubeconfig with one context per `(name, server, token)`.
pub fn kubeconfig(contexts: &[(&str, &str, Option<&str>)]) -> Kubeconfig {
    let mut yaml = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server, _) in contexts {
        yaml.push_str(&format!("- name: {name}\n  cluster:\n    server: {server}\n"));
    }
    yaml.push_str("users:\n");
    for (name, _, token) in contexts {
        match token {
            Some(token) => yaml.push_str(&format!("- name: {name}\n  user:\n    token: {token}\n")),
            None => yaml.push_str(&format!("- name: {name}\n  user: {{}}\n")),
        }
    }
    yaml.push_str("contexts:\n");
    for (name, _, _) in contexts {
        yaml.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"));
    }
    yaml.push_str(&format!("current-context: {}\n", contexts[0].0));
    Kubeconfig::from_yaml(&yaml).expect("a valid kubeconfig")
}

/// A proxy on its own thread and runtime, so that it can be killed abruptly: dropping the
/// runtime drops every task and closes every socket without a close frame, which is what a
/// client sees when the proxy process is killed.
pub struct ProxyProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts a proxy with `settings` over the contexts of `kubeconfig`.
    pub fn start(settings: ProxySettings, kubeconfig: Kubeconfig) -> ProxyProcess {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let clusters = Clusters::from_kubeconfig(kubeconfig).await.expect("clusters from the kubeconfig");
                let proxy = Proxy::start(settings, clusters).await.expect("the proxy binds");
                addr_tx.send(proxy.addr()).expect("the test waits for the address");
                if stop_rx.await.unwrap_or(false) {
                    proxy.shutdown().await;
                }
            });
            runtime.shutdown_background();
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the proxy started");
        ProxyProcess { addr, stop: Some(stop), thread: Some(thread) }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://…/mux`.
    pub fn mux_url(&self) -> String {
        format!("ws://{}/mux", self.addr)
    }

    /// `http://…`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn end(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Kills the proxy: every connection drops with no close frame.
    pub fn kill(mut self) {
        self.end(false);
    }

    /// Shuts the proxy down gracefully (close 1001).
    pub fn stop(mut self) {
        self.end(true);
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// A kube client for the simulator (full access).
pub async fn sim_client(sim: &kube_sim::Sim) -> kube::Client {
    let config = kube::Config::new(sim.url().parse().expect("the sim URL parses"));
    kube::Client::try_from(config).expect("a client")
}

/// Calls a `/_sim/` hook.
pub async fn hook(client: &kube::Client, method: &str, path: &str) -> Value {
    let req = http_request(method, path);
    let text = client.request_text(req).await.unwrap_or_else(|e| panic!("hook {method} {path}: {e}"));
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn http_request(method: &str, path: &str) -> http::Request<Vec<u8>> {
    http::Request::builder().method(method).uri(path).body(Vec::new()).expect("a valid request")
}

/// A collection straight from the simulator: (namespace, name) → object.
pub async fn list(client: &kube::Client, path: &str) -> BTreeMap<(String, String), Value> {
    let list: Value = client.request(http_request("GET", path)).await.expect("a list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| ((o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(), o["metadata"]["name"].as_str().unwrap_or_default().to_owned()), o.clone()))
        .collect()
}

/// Objects compared as users see them: the same names, each with the same content, ignoring
/// `kind`/`apiVersion`, which built-in lists leave out of their items.
pub fn same_objects(a: &BTreeMap<(String, String), Value>, b: &BTreeMap<(String, String), Value>) -> Result<(), String> {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(map) = o.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        o
    };
    if a.keys().ne(b.keys()) {
        return Err(format!("names differ: {:?} vs {:?}", a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>()));
    }
    for (key, object) in a {
        if strip(object) != strip(&b[key]) {
            return Err(format!("{key:?} differs: {} vs {}", object["metadata"]["resourceVersion"], b[key]["metadata"]["resourceVersion"]));
        }
    }
    Ok(())
}

/// A plain HTTP/1.1 GET over a fresh TCP connection, returning the whole response (status line,
/// headers and body): enough for `/metrics`, `/clusters` and the like without an HTTP client.
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("the server is listening");
    stream.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response read");
    response
}
