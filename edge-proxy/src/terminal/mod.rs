//! Kubernetes-compatible `exec` and `attach` WebSocket endpoints under
//! `/clusters/{cluster}/api/v1/namespaces/{ns}/pods/{pod}/…` (`docs/PROTOCOL.md` §7), and the
//! teardown that leaves no shell behind when the client goes away (DESIGN.md invariant 3;
//! reference `exec-portforward-protocol.md` §6).
//!
//! Code map:
//! - [`codec`]: translation between the client's protocol and the upstream's (pure).
//! - [`teardown`]: the §6 sequence as a plan (pure) and its executor.
//! - `session`: the sockets, their writer tasks and the supervisor.
//! - [`metrics`]: session and teardown counters.
//!
//! The client is accepted before the upstream is dialed, so a refusal (no such pod, a missing
//! binary, 403) reaches even a browser as a Status on channel 3 followed by close 1000.
//! Terminals are never reconnected by the proxy: Kubernetes cannot re-attach to an exec, so a
//! reconnect would be a new process (§6.7).

pub mod codec;
pub mod metrics;
mod session;
pub mod teardown;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kubemux_protocol::channel::ChannelProtocol;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::auth::{Admitted, Refusal, Target};
use crate::mux::TOKEN_PROTOCOL_PREFIX;
use crate::passthrough;
use kubemux_protocol::terminal::teardown::TeardownTimings;
use session::SessionPlan;
use teardown::SessionKind;

/// Timers and limits of terminal sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalSettings {
    /// How often the proxy pings the client (browsers answer pings but never send them).
    pub ping_interval: Duration,
    /// A client that sends nothing, not even a pong, for this long is gone: teardown.
    pub dead_after: Duration,
    /// Pause after Ctrl-C before typing `exit`: the line discipline flushes input queued with
    /// the interrupt (§6.3 step 3).
    pub interrupt_pause: Duration,
    /// How long each `exit\r` (and the Ctrl-D) waits for the status.
    pub exit_wait: Duration,
    /// How long a non-TTY exec waits for its status after stdin is closed.
    pub eof_wait: Duration,
    /// How long the proxy waits for a socket's close to complete.
    pub close_wait: Duration,
    /// The most one teardown may take, close included.
    pub teardown_cap: Duration,
    /// On shutdown: how long live sessions get to run their teardown.
    pub grace: Duration,
    /// Largest client message accepted.
    pub max_message_bytes: usize,
    /// Messages queued per direction before the sender waits (backpressure, not memory).
    pub queue: usize,
    /// How long dialing the upstream may take.
    pub dial_timeout: Duration,
    /// A test hook that makes a session's task panic, to prove panics are contained; `None` but
    /// in tests.
    #[doc(hidden)]
    pub inject_panic: Option<InjectedPanic>,
}

/// Test hook: which task of a terminal session panics, and on what bytes.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedPanic {
    /// The supervisor (the client's reader), on a client message containing these bytes.
    Supervisor(Vec<u8>),
    /// The upstream's reader, on process output containing these bytes.
    UpstreamReader(Vec<u8>),
}

impl Default for TerminalSettings {
    fn default() -> Self {
        const TEARDOWN: TeardownTimings = TeardownTimings::DEFAULT;
        TerminalSettings {
            ping_interval: Duration::from_secs(20),
            dead_after: Duration::from_secs(60),
            // The shared plan's pauses, the ones the browser's terminal core documents.
            interrupt_pause: TEARDOWN.interrupt_pause,
            exit_wait: TEARDOWN.exit_wait,
            eof_wait: TEARDOWN.eof_wait,
            close_wait: Duration::from_secs(2),
            teardown_cap: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            max_message_bytes: 1024 * 1024,
            queue: 32,
            dial_timeout: Duration::from_secs(30),
            inject_panic: None,
        }
    }
}

/// The live terminal sessions, so that shutdown can wait for their teardowns.
#[derive(Debug, Default)]
pub struct Terminals {
    tracker: TaskTracker,
}

impl Terminals {
    /// Sessions running now (including those tearing down).
    pub fn live(&self) -> usize {
        self.tracker.len()
    }

    /// Waits up to `grace` for every session to end (they start their teardown when the
    /// proxy's shutdown token is cancelled). Returns whether they all did. Idempotent.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// `/clusters/{cluster}/api/v1/namespaces/{ns}/pods/{pod}/exec`.
///
/// A cluster that does not exist is told after the upgrade, as the API server's refusals are
/// (§2.2: a browser cannot read an HTTP error body), so the target is looked up but not required.
pub async fn exec(State(app): State<Arc<AppState>>, Admitted(identity): Admitted, target: Result<Target, Refusal>, request: Request) -> Response {
    handle(app, SessionKind::Exec, identity, target, request).await
}

/// `/clusters/{cluster}/api/v1/namespaces/{ns}/pods/{pod}/attach`.
pub async fn attach(State(app): State<Arc<AppState>>, Admitted(identity): Admitted, target: Result<Target, Refusal>, request: Request) -> Response {
    handle(app, SessionKind::Attach, identity, target, request).await
}

async fn handle(app: Arc<AppState>, kind: SessionKind, identity: crate::identity::Identity, target: Result<Target, Refusal>, request: Request) -> Response {
    let settings = app.settings();
    let Some((cluster, rest)) = passthrough::split_cluster_path(request.uri().path()) else {
        return passthrough::status_response(404, "NotFound", "not found");
    };
    let Some((namespace, pod)) = pod_of(&rest) else {
        return passthrough::status_response(404, "NotFound", "not found");
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let upstream_path = if query.is_empty() { rest.clone() } else { format!("{rest}?{query}") };
    let (mut parts, body) = request.into_parts();
    let mut upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        // Not a WebSocket: whatever it is, the API server answers it.
        Err(_) => {
            return match target {
                Ok(target) => passthrough::forward(identity, target, Request::from_parts(parts, body)).await,
                Err(refusal) => refusal.into_response(),
            };
        }
    };
    // Kubernetes negotiates in the client's order. Read from the header itself: axum's
    // `requested_protocols()` is a sorted set, which would pick v4 over v5 for kube's
    // "v5.channel.k8s.io, v4.channel.k8s.io". The token protocol is never a candidate, so it
    // is never echoed.
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(TOKEN_PROTOCOL_PREFIX))
        .map(str::to_owned)
        .collect();
    let client_protocol = if offered.is_empty() {
        // No subprotocol at all is the original binary protocol, as in Kubernetes.
        ChannelProtocol::V1
    } else {
        match ChannelProtocol::negotiate(offered.iter().map(String::as_str), &ChannelProtocol::ALL) {
            Some(protocol) => {
                upgrade.set_selected_protocol(HeaderValue::from_static(protocol.name()));
                protocol
            }
            None => {
                let message = format!("requested protocol(s) are not supported: {offered:?}; supported: {:?}", ChannelProtocol::ALL.map(ChannelProtocol::name));
                return passthrough::status_response(400, "BadRequest", &message);
            }
        }
    };
    let flags = StreamFlags::parse(&query);
    let plan = SessionPlan {
        kind,
        cluster,
        namespace,
        pod,
        container: flags.container,
        upstream_path,
        identity,
        client_protocol,
        tty: flags.tty,
        stdin: flags.stdin,
    };
    let max = settings.terminal.max_message_bytes;
    let tracker = app.terminals.tracker.clone();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(CLIENT_READ_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(session::run(socket, plan, app)))
}

/// How much the client socket reads at once. The client sends keystrokes and resizes, and
/// tungstenite zero-fills this much before every read: its default of 128 KiB cost each
/// keystroke a 128 KiB memset. A paste larger than this takes more than one read.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// `namespace` and `pod` (percent-decoded) of `/api/v1/namespaces/{ns}/pods/{pod}/{sub}`.
fn pod_of(path: &str) -> Option<(String, String)> {
    let mut segments = path.strip_prefix("/api/v1/namespaces/")?.split('/');
    let namespace = segments.next()?;
    (segments.next()? == "pods").then_some(())?;
    let pod = segments.next()?;
    Some((passthrough::percent_decode(namespace), passthrough::percent_decode(pod)))
}

/// The query flags that shape a session.
#[derive(Debug, Default, PartialEq, Eq)]
struct StreamFlags {
    tty: bool,
    stdin: bool,
    container: Option<String>,
}

impl StreamFlags {
    /// Booleans as the API server reads them: absent is false; `0` and `false` (any case) are
    /// false; anything else, the empty string included, is true. The first value counts.
    fn parse(query: &str) -> StreamFlags {
        let mut flags = StreamFlags::default();
        let (mut tty, mut stdin) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let truth = || !(value == "0" || value.eq_ignore_ascii_case("false"));
            match key.as_ref() {
                "tty" if tty.is_none() => tty = Some(truth()),
                "stdin" if stdin.is_none() => stdin = Some(truth()),
                "container" if flags.container.is_none() => flags.container = Some(value.into_owned()),
                _ => {}
            }
        }
        flags.tty = tty.unwrap_or(false);
        flags.stdin = stdin.unwrap_or(false);
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_the_api_server() {
        assert_eq!(StreamFlags::parse("command=sh&stdin=true&stdout=true&tty=true"), StreamFlags { tty: true, stdin: true, container: None });
        assert_eq!(StreamFlags::parse("stdin=1&tty=0&container=shell"), StreamFlags { tty: false, stdin: true, container: Some("shell".into()) });
        assert_eq!(StreamFlags::parse("stdin=FALSE&tty="), StreamFlags { tty: true, stdin: false, container: None });
        assert_eq!(StreamFlags::parse("tty=false&tty=true"), StreamFlags::default());
    }

    #[test]
    fn pod_paths() {
        assert_eq!(pod_of("/api/v1/namespaces/default/pods/toolbox/exec"), Some(("default".into(), "toolbox".into())));
        assert_eq!(pod_of("/api/v1/namespaces/default/services/x/exec"), None);
        assert_eq!(pod_of("/apis/v1/namespaces/default/pods/x/exec"), None);
    }
}
