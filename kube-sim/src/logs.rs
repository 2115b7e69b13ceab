//! Container logs, as the kubelet keeps them: timestamped lines per container incarnation, the
//! previous incarnation's after a restart, and followers woken as lines arrive.
//!
//! Two kinds of writer: the simulator itself (a container's start, the churn's requests and
//! restarts), and processes in the container, which append to `container.log` in their working
//! directory (`$HOME/container.log`), the simulator's stand-in for a container's stdout. That
//! file is read when logs are asked for and while someone follows, so its lines carry the time
//! they were first seen.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The file in a container's sandbox whose lines become the container's log.
pub const LOG_FILE: &str = "container.log";
/// Lines kept per container incarnation; older ones are dropped, as log rotation would.
const MAX_LINES: usize = 10_000;
/// Logs kept in all; past this, logs of pods that are gone are forgotten.
const MAX_LOGS: usize = 512;

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was written (or first seen, for lines from `container.log`).
    pub at: DateTime<Utc>,
    /// The text, without the newline.
    pub text: String,
}

/// The key of a container's log: pod uid and container name.
type Key = (String, String);

struct Log {
    /// Lines of the current incarnation; `first` is the sequence number of the oldest.
    lines: VecDeque<Line>,
    first: u64,
    previous: Option<Vec<Line>>,
    /// The `container.log` of this container and how much of it has been read.
    file: PathBuf,
    offset: u64,
    /// The sequence number one past the newest line, for followers to wait on.
    written: watch::Sender<u64>,
}

impl Log {
    fn push(&mut self, line: Line) {
        self.lines.push_back(line);
        if self.lines.len() > MAX_LINES {
            self.lines.pop_front();
            self.first += 1;
        }
        let end = self.first + self.lines.len() as u64;
        self.written.send_replace(end);
    }

    /// Takes in what processes appended to `container.log` since the last look.
    fn pull_file(&mut self, now: DateTime<Utc>) {
        let Ok(mut file) = std::fs::File::open(&self.file) else { return };
        let Ok(len) = file.metadata().map(|m| m.len()) else { return };
        if len < self.offset {
            // Truncated by someone: start over from its beginning.
            self.offset = 0;
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.take(len - self.offset).read_to_end(&mut bytes).is_err() {
            return;
        }
        // Only whole lines; a partial one waits for its newline.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return };
        self.offset += end as u64 + 1;
        for text in String::from_utf8_lossy(&bytes[..end]).split('\n') {
            self.push(Line { at: now, text: text.to_owned() });
        }
    }
}

/// Every container's log. See the module docs.
#[derive(Default)]
pub struct ContainerLogs {
    logs: Mutex<HashMap<Key, Log>>,
    follows: AtomicU64,
}

/// Where a follower is: the sequence number of the next line it wants.
pub type Cursor = u64;

impl ContainerLogs {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Log>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the log of `container` of pod `uid`, starting it (with the container's start
    /// lines at `started`) if this is the first anyone hears of it. `live` says which pod uids
    /// still exist, for forgetting the rest when too many logs are kept.
    fn with<T>(&self, uid: &str, container: &str, start: &Start<'_>, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut logs = self.lock();
        if logs.len() >= MAX_LOGS {
            logs.retain(|(pod, _), _| (start.live)(pod));
        }
        let key = (uid.to_owned(), container.to_owned());
        let log = logs.entry(key).or_insert_with(|| {
            let mut log = Log { lines: VecDeque::new(), first: 0, previous: None, file: start.file.clone(), offset: 0, written: watch::channel(0).0 };
            for line in start_lines(start) {
                log.push(line);
            }
            log
        });
        f(log)
    }

    /// Appends a line the simulator writes (the churn's requests, say).
    pub fn append(&self, uid: &str, container: &str, start: &Start<'_>, text: String) {
        self.with(uid, container, start, |log| log.push(Line { at: Utc::now(), text }));
    }

    /// The container restarted: its log becomes the previous one and a new one starts.
    pub fn restart(&self, uid: &str, container: &str, start: &Start<'_>, now: DateTime<Utc>) {
        self.with(uid, container, start, |log| {
            log.pull_file(now);
            let ended: Vec<Line> = log.lines.drain(..).collect();
            log.first += ended.len() as u64;
            log.previous = Some(ended);
            // What was written to the file so far belonged to the old incarnation.
            log.offset = std::fs::metadata(&log.file).map_or(0, |m| m.len());
            for line in start_lines(&Start { started: now, ..start.clone() }) {
                log.push(line);
            }
        });
    }

    /// The current lines (after taking in the file), and the cursor after them; or the
    /// previous incarnation's lines (`None` when there was none).
    pub fn read(&self, uid: &str, container: &str, start: &Start<'_>, previous: bool) -> Option<(Vec<Line>, Cursor)> {
        self.with(uid, container, start, |log| {
            if previous {
                return log.previous.clone().map(|lines| (lines, 0));
            }
            log.pull_file(Utc::now());
            Some((log.lines.iter().cloned().collect(), log.first + log.lines.len() as u64))
        })
    }

    /// Lines after `cursor` (from the oldest still kept, if the follower fell behind) and the
    /// new cursor, plus a receiver that changes when more arrive.
    pub fn since(&self, uid: &str, container: &str, start: &Start<'_>, cursor: Cursor) -> (Vec<Line>, Cursor, watch::Receiver<u64>) {
        self.with(uid, container, start, |log| {
            log.pull_file(Utc::now());
            let skip = usize::try_from(cursor.saturating_sub(log.first)).unwrap_or(usize::MAX);
            let lines = log.lines.iter().skip(skip).cloned().collect();
            (lines, log.first + log.lines.len() as u64, log.written.subscribe())
        })
    }

    /// Counts a follow for `/_sim/stats` while the guard lives.
    pub fn follow(&self) -> FollowGuard<'_> {
        self.follows.fetch_add(1, Ordering::Relaxed);
        FollowGuard(self)
    }

    /// Follows streaming right now.
    pub fn open_follows(&self) -> u64 {
        self.follows.load(Ordering::Relaxed)
    }
}

/// See [`ContainerLogs::follow`].
pub struct FollowGuard<'a>(&'a ContainerLogs);

impl Drop for FollowGuard<'_> {
    fn drop(&mut self) {
        self.0.follows.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a log needs to begin: the container's identity, its start time and its log file.
#[derive(Clone)]
pub struct Start<'a> {
    /// Namespace of the pod.
    pub namespace: &'a str,
    /// Pod name.
    pub pod: &'a str,
    /// Container name.
    pub container: &'a str,
    /// When the container started.
    pub started: DateTime<Utc>,
    /// Its `container.log`.
    pub file: PathBuf,
    /// Whether a pod uid still exists.
    pub live: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Runs `f` with the [`Start`] of `container` of `pod`: started at the container's (or the
/// pod's) start time, its file in the container's sandbox.
pub fn with_start<T>(state: &crate::SimState, pod: &serde_json::Value, container: &str, f: impl FnOnce(&Start<'_>) -> T) -> T {
    let text = |pointer: &str| pod.pointer(pointer).and_then(serde_json::Value::as_str).unwrap_or_default();
    let namespace = text("/metadata/namespace");
    let name = text("/metadata/name");
    let started = pod
        .pointer("/status/containerStatuses")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .find(|s| s.get("name").and_then(serde_json::Value::as_str) == Some(container))
        .and_then(|s| s.pointer("/state/running/startedAt")?.as_str())
        .or_else(|| pod.pointer("/status/startTime")?.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let live = |uid: &str| state.store.list(&crate::resources::PODS, None).1.iter().any(|p| p.pointer("/metadata/uid").and_then(serde_json::Value::as_str) == Some(uid));
    let file = state.runtime.sandbox_dir(namespace, name, container).join(LOG_FILE);
    f(&Start { namespace, pod: name, container, started, file, live: &live })
}

fn start_lines(start: &Start<'_>) -> [Line; 2] {
    let Start { namespace, pod, container, started, .. } = start;
    [
        Line { at: *started, text: format!("kube-sim: container {container} of pod {namespace}/{pod} started") },
        Line { at: *started, text: "kube-sim: ready".to_owned() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_the_simulator_and_the_file_restarts_and_followers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(LOG_FILE);
        let logs = ContainerLogs::default();
        let live = |_: &str| true;
        let start = Start { namespace: "ns", pod: "p", container: "c", started: Utc::now(), file: file.clone(), live: &live };
        let texts = |lines: &[Line]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();

        let (lines, cursor) = logs.read("u", "c", &start, false).unwrap();
        assert_eq!(texts(&lines), ["kube-sim: container c of pod ns/p started", "kube-sim: ready"]);
        assert!(logs.read("u", "c", &start, true).is_none(), "no previous container yet");

        logs.append("u", "c", &start, "GET /".to_owned());
        std::fs::write(&file, "from a process\npartial").unwrap();
        let (lines, cursor, _) = logs.since("u", "c", &start, cursor);
        assert_eq!(texts(&lines), ["GET /", "from a process"]);
        let (lines, _, _) = logs.since("u", "c", &start, cursor);
        assert!(lines.is_empty(), "a line without its newline waits");

        logs.restart("u", "c", &start, Utc::now());
        let (previous, _) = logs.read("u", "c", &start, true).unwrap();
        assert_eq!(texts(&previous).last().map(String::as_str), Some("from a process"));
        let (lines, _) = logs.read("u", "c", &start, false).unwrap();
        assert_eq!(lines.len(), 2, "a fresh log after the restart: {lines:?}");
    }
}
