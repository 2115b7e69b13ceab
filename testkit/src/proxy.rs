//! A proxy that a test can kill as abruptly as a crashed process, and the kubeconfig it reads.

use std::net::SocketAddr;
use std::time::Duration;

use kube::config::Kubeconfig;
use kubemux_proxy::clusters::Clusters;
use kubemux_proxy::{Proxy, ProxySettings};
use tokio::sync::oneshot;

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
