//! What every end-to-end test of kube-sim shares: a simulator per test, clients of three kinds
//! (the `kube` crate, raw HTTP through kube's transport, raw WebSockets), a line reader for
//! watch streams, and waiting on events with a deadline instead of sleeping.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::future::Future;

use axum::body::BodyDataStream;
use axum::http::{Method, Request, header};
use futures::StreamExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Seed, Sim, SimConfig};
use serde_json::Value;

pub use kubemux_testkit::wait::{DEADLINE, within};

/// A simulator on 127.0.0.1:0 with `seed`, no churn, otherwise defaults.
pub async fn start(seed: Seed) -> Sim {
    start_with(SimConfig { seed, ..SimConfig::default() }).await
}

/// A simulator with `config` (the listen address is always 127.0.0.1:0, churn off unless set).
pub async fn start_with(config: SimConfig) -> Sim {
    Sim::start(SimConfig { listen: ([127, 0, 0, 1], 0).into(), ..config }).await.expect("the simulator starts")
}

/// A simulator with the demo seed serving HTTPS with a generated CA (`SimConfig::tls`).
pub async fn start_tls() -> Sim {
    start_with(SimConfig { seed: Seed::Demo, tls: Some(kube_sim::tls::TlsConfig::default()), ..SimConfig::default() }).await
}

/// A `kube::Client` built the way a user would: from the simulator's kubeconfig.
pub async fn kube_client(sim: &Sim) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("the simulator's kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube accepts the simulator's kubeconfig");
    kube::Client::try_from(config).expect("a client from the kubeconfig")
}

/// Asks `probe` until it yields `Some`, failing after [`DEADLINE`]. For state that has no
/// event to subscribe to (the process table, counters); see `kubemux_testkit::wait::poll`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    kubemux_testkit::wait::poll(what, DEADLINE, || {
        let answer = probe();
        async move { answer.await.ok_or_else(|| "not yet".to_owned()) }
    })
    .await
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON; fails the test if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts a 2xx status and returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert!((200..300).contains(&self.status), "expected success, got {}: {}", self.status, self.text);
        self.json()
    }

    /// Asserts the real API server's error shape: HTTP `code` with a `Status` body carrying the
    /// same code and `reason`. Returns the body.
    #[track_caller]
    pub fn status(&self, code: u16, reason: &str) -> Value {
        assert_eq!(self.status, code, "HTTP status; body: {}", self.text);
        let body = self.json();
        assert_eq!(
            (body["kind"].as_str(), body["apiVersion"].as_str(), body["status"].as_str(), body["code"].as_u64(), body["reason"].as_str()),
            (Some("Status"), Some("v1"), Some("Failure"), Some(u64::from(code)), Some(reason)),
            "Status body: {body}"
        );
        assert_eq!(self.content_type.as_deref(), Some("application/json"), "content type of {body}");
        body
    }
}

/// Raw HTTP against a simulator, through kube's own transport (hyper), with an optional
/// bearer token per request.
#[derive(Clone)]
pub struct Http {
    client: kube::Client,
    token: Option<String>,
}

impl Http {
    /// Anonymous requests (the simulator's default: no users, full access).
    pub fn new(sim: &Sim) -> Http {
        let mut config = kube::Config::new(sim.url().parse().expect("the simulator URL is a URI"));
        // An HTTPS simulator's CA, trusted as its kubeconfig trusts it.
        config.root_cert = sim.state().tls.as_ref().map(|tls| vec![tls.ca_der().to_vec()]);
        // The test must see every response as sent: no retries of 429/503.
        config.default_retry = false;
        Http { client: kube::Client::try_from(config).expect("a raw client"), token: None }
    }

    /// The same, sending `Authorization: Bearer <token>`.
    pub fn with_token(sim: &Sim, token: &str) -> Http {
        Http { token: Some(token.to_owned()), ..Http::new(sim) }
    }

    fn build(&self, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<kube::client::Body> {
        let mut request = Request::builder().method(method).uri(path).header(header::ACCEPT, "application/json");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(kube::client::Body::from(body)).expect("a valid request")
    }

    async fn head(&self, request: Request<kube::client::Body>) -> axum::http::Response<kube::client::Body> {
        within("response headers", self.client.send(request)).await.expect("the simulator answers")
    }

    /// Sends a request with a body of `content_type` and reads the whole response.
    pub async fn send(&self, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let response = self.head(self.build(method, path, content_type, body)).await;
        let status = response.status().as_u16();
        let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = within("the response body", response.into_body().collect_bytes()).await.expect("the body reads");
        Reply { status, content_type, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Vec::new()).await
    }

    /// `method path` with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Reply {
        self.send(method, path, Some("application/json"), body.to_string().into_bytes()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.json(Method::POST, path, body).await
    }

    /// `POST path` with no body (the `/_sim` hooks).
    pub async fn hook(&self, path: &str) -> Value {
        self.send(Method::POST, path, None, Vec::new()).await.ok()
    }

    /// `GET /_sim/stats`.
    pub async fn stats(&self) -> Value {
        self.get("/_sim/stats").await.ok()
    }

    /// Waits until `/_sim/stats` satisfies `wanted`, and returns those stats (a poll: the
    /// counters push nothing; a failure shows the last stats).
    pub async fn stats_when(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let wanted = &wanted;
        kubemux_testkit::wait::poll(what, DEADLINE, || async move {
            let stats = self.stats().await;
            if wanted(&stats) { Ok(stats) } else { Err(stats.to_string()) }
        })
        .await
    }

    /// The list at `path`: its `metadata.resourceVersion` and item names, in order.
    pub async fn list(&self, path: &str) -> (String, Vec<String>) {
        let list = self.get(path).await.ok();
        let rv = list["metadata"]["resourceVersion"].as_str().expect("lists carry a resourceVersion").to_owned();
        (rv, names(&list["items"]))
    }

    /// Opens a streaming `GET` (a watch) and returns its status and line reader once the
    /// headers are in.
    pub async fn stream(&self, path: &str) -> (u16, Lines) {
        let response = self.head(self.build(Method::GET, path, None, Vec::new())).await;
        let status = response.status().as_u16();
        (status, Lines { body: axum::body::Body::new(response.into_body()).into_data_stream(), buffer: Vec::new() })
    }
}

/// `metadata.name` of every object in a JSON array.
pub fn names(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|item| item["metadata"]["name"].as_str().expect("objects have names").to_owned())
        .collect()
}

/// A streaming body read as `\n`-terminated lines, the way kube-rs, Python and client-node
/// read watches.
pub struct Lines {
    body: BodyDataStream,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next complete line, or `None` once the body has ended cleanly. Fails the test on a
    /// transport error, on a trailing partial line, or after [`DEADLINE`].
    pub async fn next_line(&mut self) -> Option<String> {
        within("watch line", async {
            loop {
                if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buffer.drain(..=end).collect();
                    return Some(String::from_utf8(line[..end].to_vec()).expect("watch lines are UTF-8"));
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => panic!("the watch stream broke: {e}"),
                    None => {
                        assert!(self.buffer.is_empty(), "the stream ended inside a line: {:?}", String::from_utf8_lossy(&self.buffer));
                        return None;
                    }
                }
            }
        })
        .await
    }

    /// The next line as a JSON event; fails the test if the stream ends instead.
    pub async fn next_event(&mut self) -> Value {
        let line = self.next_line().await.expect("another watch event, not the end of the stream");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"))
    }

    /// Skips events until one satisfies `wanted`, and returns it.
    pub async fn until(&mut self, mut wanted: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let event = self.next_event().await;
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Asserts that the server ends the stream (cleanly) with no further event.
    pub async fn assert_ends(&mut self) {
        if let Some(line) = self.next_line().await {
            panic!("expected the stream to end, got another line: {line}");
        }
    }
}

#[allow(unused_imports)]
pub use kubemux_testkit::ws::{Ws, process_running};

/// A refused WebSocket upgrade: the HTTP status and the body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status code.
    pub status: u16,
    /// The body, parsed as JSON.
    pub body: Value,
}

/// Opens a WebSocket to `path_and_query` offering `protocol`, as kubectl and browsers do; the
/// server must answer with that protocol, and a refusal with a JSON body.
pub async fn websocket(sim: &Sim, path_and_query: &str, protocol: &str) -> Result<Ws, Refused> {
    match kubemux_testkit::ws::connect(sim.addr(), path_and_query, protocol, &[]).await {
        Ok((ws, chosen)) => {
            assert_eq!(chosen.as_deref(), Some(protocol), "the server must answer with the offered subprotocol");
            Ok(ws)
        }
        Err(refused) => {
            let body = serde_json::from_str(&refused.body).unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", refused.status, refused.body));
            Err(Refused { status: refused.status, body })
        }
    }
}

/// The names of the pods in `namespace` whose `app` label is `app`, from the store.
pub fn pods_of(sim: &Sim, namespace: &str, app: &str) -> Vec<String> {
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, Some(namespace));
    pods.iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .map(|p| p["metadata"]["name"].as_str().expect("pods have names").to_owned())
        .collect()
}

/// The demo seed's pods, `namespace/name`, sorted.
pub fn all_pods(sim: &Sim) -> Vec<String> {
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, None);
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or_default(), p["metadata"]["name"].as_str().unwrap_or_default()))
        .collect();
    names.sort();
    names
}

/// The `/_sim/processes` entries of `namespace/pod`, with their pids. Each entry is
/// `{"pid", "namespace", "pod", "container", "command", "tty", "kind", …}`.
pub async fn processes_of(http: &Http, namespace: &str, pod: &str) -> Vec<(i32, Value)> {
    let table = http.get("/_sim/processes").await.ok();
    table
        .as_array()
        .expect("/_sim/processes is an array")
        .iter()
        .filter(|entry| entry["namespace"] == namespace && entry["pod"] == pod)
        .map(|entry| {
            let pid = entry["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok());
            (pid.unwrap_or_else(|| panic!("a numeric pid in {entry}")), entry.clone())
        })
        .collect()
}

/// Runs a `kube::runtime::watcher` in the background (a watcher only makes progress while
/// polled) and hands its items to the test in order.
pub struct Watcher<K> {
    events: tokio::sync::mpsc::UnboundedReceiver<Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Watcher<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// Starts `watcher(api, config)` with the default backoff.
    pub fn spawn(api: kube::Api<K>, config: kube::runtime::watcher::Config) -> Watcher<K> {
        use kube::runtime::WatchStreamExt as _;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(kube::runtime::watcher(api, config).default_backoff());
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Watcher { events, task }
    }

    /// The next item, error or event.
    pub async fn next_item(&mut self) -> Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error> {
        within("a watcher event", self.events.recv()).await.expect("the watcher never ends")
    }

    /// The next event; fails the test on a watcher error.
    pub async fn next(&mut self) -> kube::runtime::watcher::Event<K> {
        self.next_item().await.expect("the watcher reports no error")
    }

    /// Consumes `Init`, every `InitApply` and `InitDone`, returning the objects listed.
    pub async fn initial_list(&mut self) -> Vec<K> {
        use kube::runtime::watcher::Event;
        match self.next().await {
            Event::Init => {}
            other => panic!("expected Init, got {other:?}"),
        }
        let mut objects = Vec::new();
        loop {
            match self.next().await {
                Event::InitApply(object) => objects.push(object),
                Event::InitDone => return objects,
                other => panic!("unexpected event during a list: {other:?}"),
            }
        }
    }
}

impl<K> Drop for Watcher<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
