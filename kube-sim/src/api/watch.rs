//! `GET <collection>?watch=true`, exactly as reference `kube-api-semantics.md` §7 says: start
//! rules for unset/"0"/X, selector transitions, bookmarks only when asked, an expired version
//! answered with HTTP 200 and one in-stream `ERROR` 410, `timeoutSeconds`, `sendInitialEvents`,
//! one JSON object per line, flushed per event.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::Query;
use super::table::TableRequest;
use super::list::{RequestedVersion, TOO_LARGE_WAIT, validate_list_options};
use crate::SimState;
use crate::resources::ResourceDef;
use crate::selectors::Selector;
use crate::status::ApiError;
use crate::store::{Event, EventType, Expired};

/// What one watch was asked for.
struct WatchRequest {
    resource: &'static ResourceDef,
    namespace: Option<String>,
    selector: Selector,
    start: RequestedVersion,
    bookmarks: bool,
    send_initial_events: bool,
    deadline: Instant,
    /// Events' objects as one-row Tables (`kubectl get -w`).
    table: Option<TableRequest>,
}

impl WatchRequest {
    /// The line for an ADDED, MODIFIED or DELETED event, its object as the client asked.
    fn change_line(&self, kind: &str, object: &Value) -> Bytes {
        match &self.table {
            Some(table) => event_line(kind, &table.object(self.resource, object)),
            None => event_line(kind, object),
        }
    }

    fn wants(&self, event: &Event) -> bool {
        std::ptr::eq(event.resource, self.resource) && self.namespace.as_ref().is_none_or(|ns| *ns == event.namespace)
    }

    /// The event this watch sees for a change, with selector transitions (§7.4 E3).
    fn translate(&self, event: &Event) -> Option<(EventType, Arc<Value>)> {
        let now = self.selector.matches(&event.object);
        let before = event.previous.as_ref().is_some_and(|p| self.selector.matches(p));
        match event.kind {
            EventType::Added => now.then(|| (EventType::Added, event.object.clone())),
            EventType::Deleted => (before || now).then(|| (EventType::Deleted, event.object.clone())),
            EventType::Modified => match (before, now) {
                (true, true) => Some((EventType::Modified, event.object.clone())),
                (false, true) => Some((EventType::Added, event.object.clone())),
                (true, false) => {
                    // The previous content, with the revision of the change.
                    let mut gone = (**event.previous.as_ref()?).clone();
                    gone["metadata"]["resourceVersion"] = json!(event.rv.to_string());
                    Some((EventType::Deleted, Arc::new(gone)))
                }
                (false, false) => None,
            },
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    serde_json::to_writer(&mut line, object).expect("JSON values serialise");
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

fn bookmark_line(resource: &ResourceDef, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line("BOOKMARK", &json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata}))
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.status())
}

fn expired_error(expired: Expired) -> ApiError {
    ApiError::expired(format!("too old resource version: {} ({})", expired.requested, expired.floor))
}

/// As good as no deadline: thirty years.
const NEVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Serves a watch: validates, then answers 200 at once and streams from a task.
pub(super) async fn watch(state: &Arc<SimState>, resource: &'static ResourceDef, namespace: Option<String>, query: &Query, table: Option<TableRequest>) -> Result<Response, ApiError> {
    validate_list_options(query, true)?;
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), resource)?;
    let start = RequestedVersion::parse(query)?;
    let timeout = match query.get("timeoutSeconds") {
        None | Some("") => state.config.default_watch_timeout,
        Some(raw) => Duration::from_secs(raw.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {raw:?}")))?),
    };
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let request = WatchRequest {
        resource,
        namespace,
        selector,
        start,
        bookmarks: flag("allowWatchBookmarks"),
        send_initial_events: flag("sendInitialEvents"),
        // A timeout past what the clock can add is a watch that does not time out.
        deadline: Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + NEVER),
        table,
    };
    state.hooks.watch_requests.fetch_add(1, Ordering::Relaxed);
    // A small buffer: a client that stops reading holds back only its own watch.
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(stream_events(state.clone(), request, tx));
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")], body).into_response())
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Counts an open watch for `/_sim/stats` for as long as it lives.
struct OpenWatch<'a>(&'a SimState);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.hooks.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the event loop stopped.
enum End {
    /// The client went away or the watch ended; nothing more to send.
    Quiet,
    /// Send this error event, then end.
    Error(ApiError),
}

async fn stream_events(state: Arc<SimState>, request: WatchRequest, tx: mpsc::Sender<Result<Bytes, Infallible>>) {
    state.hooks.open_watches.fetch_add(1, Ordering::Relaxed);
    let _open = OpenWatch(&state);
    if let End::Error(error) = run_watch(&state, &request, &tx).await {
        let _ = tx.send(Ok(error_line(&error))).await;
    }
}

async fn run_watch(state: &SimState, request: &WatchRequest, tx: &mpsc::Sender<Result<Bytes, Infallible>>) -> End {
    let mut close_epoch = state.hooks.close_epoch.subscribe();
    let mut revisions = state.store.subscribe_revisions();
    let send = |line: Bytes| async move { tx.send(Ok(line)).await.is_ok() };

    // Where to start, and the synthetic ADDED events of the initial state.
    let mut cursor = match request.start {
        RequestedVersion::Latest | RequestedVersion::Any => {
            let (rv, items) = state.store.list(request.resource, request.namespace.as_deref());
            for item in items.iter().filter(|o| request.selector.matches(o)) {
                if !send(request.change_line("ADDED", item)).await {
                    return End::Quiet;
                }
            }
            if request.send_initial_events && request.bookmarks && !send(bookmark_line(request.resource, rv, true)).await {
                return End::Quiet;
            }
            rv
        }
        RequestedVersion::At(rv) => {
            if rv > state.store.current_rv()
                && tokio::time::timeout(TOO_LARGE_WAIT, revisions.wait_for(|current| *current >= rv)).await.is_err()
            {
                return End::Error(ApiError::too_large_resource_version(rv, state.store.current_rv()));
            }
            if request.send_initial_events {
                // "Not older than X": the current state is newer than X.
                let (now, items) = state.store.list(request.resource, request.namespace.as_deref());
                for item in items.iter().filter(|o| request.selector.matches(o)) {
                    if !send(request.change_line("ADDED", item)).await {
                        return End::Quiet;
                    }
                }
                if request.bookmarks && !send(bookmark_line(request.resource, now, true)).await {
                    return End::Quiet;
                }
                now
            } else {
                rv
            }
        }
    };

    let mut bookmark_at = Instant::now() + state.config.bookmark_interval;
    loop {
        // A stalled watch delivers nothing, bookmarks included, until the stall ends.
        if let Some(until) = state.hooks.stalled_until() {
            tokio::select! {
                _ = sleep_until(until) => continue,
                _ = sleep_until(request.deadline) => return End::Quiet,
                _ = close_epoch.changed() => return End::Quiet,
                _ = state.shutdown.cancelled() => return End::Quiet,
                _ = tx.closed() => return End::Quiet,
            }
        }
        if let Err(end) = deliver(state, request, &mut cursor, tx).await {
            return end;
        }
        tokio::select! {
            changed = revisions.changed() => {
                if changed.is_err() {
                    return End::Quiet;
                }
            }
            _ = sleep_until(bookmark_at) => {
                bookmark_at = Instant::now() + state.config.bookmark_interval;
                if request.bookmarks && state.hooks.stalled_until().is_none() {
                    // Deliver pending events first, so the bookmark never skips one.
                    if let Err(end) = deliver(state, request, &mut cursor, tx).await {
                        return end;
                    }
                    if !send(bookmark_line(request.resource, cursor, false)).await {
                        return End::Quiet;
                    }
                }
            }
            _ = sleep_until(request.deadline) => return End::Quiet,
            _ = close_epoch.changed() => return End::Quiet,
            _ = state.shutdown.cancelled() => return End::Quiet,
            _ = tx.closed() => return End::Quiet,
        }
    }
}

/// Sends every change after `cursor` that this watch sees, and moves the cursor on.
async fn deliver(state: &SimState, request: &WatchRequest, cursor: &mut u64, tx: &mpsc::Sender<Result<Bytes, Infallible>>) -> Result<(), End> {
    let (events, upto) = state.store.events_since(*cursor).map_err(|expired| End::Error(expired_error(expired)))?;
    for event in events.iter().filter(|e| request.wants(e)) {
        if let Some((kind, object)) = request.translate(event) {
            tx.send(Ok(request.change_line(kind.as_str(), &object))).await.map_err(|_| End::Quiet)?;
        }
    }
    *cursor = upto;
    Ok(())
}
