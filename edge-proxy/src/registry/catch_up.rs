//! Resuming a subscriber whose version the ring no longer holds (typically right after a proxy
//! restart): rather than a `reset` and a full snapshot, a short-lived upstream watch from the
//! subscriber's own version replays what it missed, up to the version `P` at which it joined
//! the shared watch; the shared ring supplies everything after `P`.
//!
//! Versions are opaque to Kubernetes clients, but the hand-over needs to know which events come
//! before `P`. The catch-up is only tried when both versions are integers (as etcd-backed API
//! servers' are); otherwise, and whenever the hand-over cannot be confirmed in time (no event or
//! bookmark past `P` arrives), the subscriber gets a `reset` instead: never a guess.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::request::{Requests, parse_event_type, parse_line};
use super::upstream::watch_lines;
use super::{Command, Sink, WatchKey};
use crate::logging::panic_message;
use crate::metrics::{Metrics, TaskKind};

/// How a catch-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It reached the hand-over version: the subscriber joins the shared watch.
    Confirmed,
    /// It could not confirm the hand-over in time: the subscriber is reset.
    Unconfirmed,
    /// It panicked: the subscription ends with an internal error.
    Panicked,
}

/// One subscriber's catch-up.
pub(super) struct CatchUp {
    pub(super) client: kube::Client,
    /// The subscriber's watch.
    pub(super) key: WatchKey,
    /// The requests of that watch.
    pub(super) requests: Requests,
    /// The subscriber's version.
    pub(super) from: u64,
    /// Where it joins the shared watch.
    pub(super) to: u64,
    pub(super) sink: Arc<Sink>,
    pub(super) sub_id: u64,
    /// The upstream task's command channel.
    pub(super) report: mpsc::WeakUnboundedSender<Command>,
    /// How long the hand-over may take.
    pub(super) within: Duration,
    /// The longest watch line it buffers; a longer one ends the catch-up (a reset).
    pub(super) max_line_bytes: usize,
    pub(super) metrics: Arc<Metrics>,
    /// The test hook: panic as it starts.
    pub(super) inject_panic: bool,
}

impl CatchUp {
    /// Streams the events in `(from, to]` to the sink, then reports to the upstream task
    /// whether the hand-over at `to` is confirmed, or that the catch-up panicked.
    pub(super) async fn run(self) {
        let inject_panic = self.inject_panic;
        let forwarded = async {
            if inject_panic {
                // Reachable only from a test: `RegistrySettings::inject_panic` is doc-hidden,
                // `None` by default, and no flag or config key sets it.
                panic!("injected panic in a catch-up task (test hook)");
            }
            forward(self.client, &self.requests, self.from, self.to, &self.sink, self.max_line_bytes).await
        };
        let outcome = match AssertUnwindSafe(tokio::time::timeout(self.within, forwarded)).catch_unwind().await {
            Ok(Ok(true)) => Outcome::Confirmed,
            Ok(_) => Outcome::Unconfirmed,
            Err(panic) => {
                self.metrics.task_panic(TaskKind::CatchUp);
                tracing::error!(task = %TaskKind::CatchUp, cluster = %self.key.cluster, path = %self.key.path, panic = panic_message(panic.as_ref()), "a proxy task panicked; its subscription ends with an internal error");
                Outcome::Panicked
            }
        };
        if let Some(report) = self.report.upgrade() {
            let _ = report.send(Command::CaughtUp { sub_id: self.sub_id, outcome });
        }
    }
}

async fn forward(client: kube::Client, requests: &Requests, from: u64, to: u64, sink: &Sink, max_line_bytes: usize) -> bool {
    // A request the shared watch could build is one this can: failing, the subscriber is reset.
    let Ok(request) = requests.watch(&from.to_string(), None) else { return false };
    let Ok(stream) = client.request_stream(request).await else { return false };
    // An over-long line ends it like any other error: the subscriber gets a reset.
    let mut lines = watch_lines(stream, max_line_bytes);
    while let Some(Ok(line)) = lines.next().await {
        let Some(event) = parse_line(&line) else { return false };
        let Some(resource_version) = event.meta.resource_version else { return false };
        let Ok(rv) = resource_version.parse::<u64>() else { return false };
        match event.kind {
            "BOOKMARK" if rv >= to => return true,
            "BOOKMARK" => {}
            kind => {
                let Some(event_type) = parse_event_type(kind) else { return false };
                if rv > to {
                    return true;
                }
                sink.event(event_type, event.object, Some(&*resource_version));
            }
        }
    }
    false
}
