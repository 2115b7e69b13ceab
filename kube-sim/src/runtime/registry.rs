//! The process registry: every process the simulator started that has not yet been reaped,
//! and every process group it created, so that pod deletion and shutdown can SIGKILL them.
//!
//! An entry also owns whatever must stay alive as long as the process does. For a TTY
//! process that is the PTY master and its stdin writer: a real container runtime keeps the
//! master open after the client goes (reference §4), so dropping it here when the session
//! ends would send the shell a hangup it never gets in Kubernetes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::process::PtyKeepAlive;

/// How many trailing stdin bytes an attach entry remembers.
const STDIN_TAIL: usize = 4096;

/// Whether a process was started by `exec` or is a container's main process (`attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessKind {
    /// Started by one `exec` request.
    Exec,
    /// A container's main process, shared by every `attach`.
    Attach,
}

/// Who a process belongs to and what it runs.
#[derive(Debug, Clone)]
pub(crate) struct ProcessInfo {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid, so that a pod recreated under the same name is a different owner.
    pub uid: String,
    /// Container name.
    pub container: String,
    /// argv.
    pub command: Vec<String>,
    /// Whether it runs under a PTY.
    pub tty: bool,
    /// exec or attach.
    pub kind: ProcessKind,
}

/// Every byte written to a main process's stdin through `attach`: a count and the tail.
/// Tests read it to prove that nothing (a proxy in particular) injected input.
#[derive(Debug, Default)]
pub(crate) struct StdinLog {
    total: AtomicU64,
    tail: Mutex<VecDeque<u8>>,
}

impl StdinLog {
    /// Records bytes about to be written to the process.
    pub fn record(&self, bytes: &[u8]) {
        self.total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.extend(bytes.iter().copied());
        let excess = tail.len().saturating_sub(STDIN_TAIL);
        tail.drain(..excess);
    }

    /// Bytes written so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The last bytes written (at most 4 KiB), lossily as text.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = tail.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

struct Entry {
    info: ProcessInfo,
    pid: u32,
    stdin_log: Option<Arc<StdinLog>>,
    /// Held only to keep the PTY open until the process exits.
    _keep_alive: Option<PtyKeepAlive>,
}

/// A process group we created; it may outlive its leader (background jobs).
struct Group {
    pgid: u32,
    uid: String,
    container: String,
}

#[derive(Default)]
struct Inner {
    stopped: bool,
    entries: BTreeMap<u64, Entry>,
    groups: Vec<Group>,
}

/// The registry was shut down; the process that tried to register has been killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the runtime is shutting down")]
pub(crate) struct Stopped;

/// See the module docs.
#[derive(Default)]
pub(crate) struct ProcessRegistry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

/// SIGKILLs a whole process group. ESRCH (already gone) is fine.
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Whether any process is still in the group (signal 0 probes without sending).
fn group_exists(pgid: u32) -> bool {
    i32::try_from(pgid).is_ok_and(|pgid| pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok())
}

impl ProcessRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation is a single insert or remove, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a freshly spawned process (its pid is also its process group id). After
    /// [`ProcessRegistry::stop`] the process is killed at once instead.
    pub fn register(
        &self,
        info: ProcessInfo,
        pid: u32,
        keep_alive: Option<PtyKeepAlive>,
        stdin_log: Option<Arc<StdinLog>>,
    ) -> Result<u64, Stopped> {
        let mut inner = self.lock();
        if inner.stopped {
            drop(inner);
            kill_group(pid);
            return Err(Stopped);
        }
        // Forget groups whose every member has gone, so a recycled pid is never signalled.
        inner.groups.retain(|g| group_exists(g.pgid));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        inner.groups.push(Group { pgid: pid, uid: info.uid.clone(), container: info.container.clone() });
        inner.entries.insert(id, Entry { info, pid, stdin_log, _keep_alive: keep_alive });
        Ok(id)
    }

    /// The process was reaped: drop its entry (closing a PTY master it kept open).
    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        let entry = inner.entries.remove(&id);
        if let Some(entry) = &entry {
            let pgid = entry.pid;
            if !group_exists(pgid) {
                inner.groups.retain(|g| g.pgid != pgid);
            }
        }
        drop(inner);
        // Closing the PTY master happens here, outside the lock.
        drop(entry);
    }

    /// SIGKILLs every process group of the pod incarnation `uid` (of one container, or all).
    /// The entries go when their processes are reaped. Returns how many groups were signalled.
    pub fn kill_owned_by(&self, uid: &str, container: Option<&str>) -> usize {
        let mut inner = self.lock();
        let mut doomed = Vec::new();
        inner.groups.retain(|g| {
            let matches = g.uid == uid && container.is_none_or(|c| c == g.container);
            if matches {
                doomed.push(g.pgid);
            }
            !matches
        });
        drop(inner);
        for pgid in &doomed {
            kill_group(*pgid);
        }
        doomed.len()
    }

    /// Refuses further registrations and SIGKILLs every group. Idempotent.
    pub fn stop(&self) {
        let mut inner = self.lock();
        inner.stopped = true;
        let doomed: Vec<u32> = inner.groups.drain(..).map(|g| g.pgid).collect();
        drop(inner);
        for pgid in doomed {
            kill_group(pgid);
        }
    }

    /// Live (not yet reaped) processes, for `GET /_sim/processes`.
    pub fn to_json(&self) -> Value {
        let inner = self.lock();
        let list: Vec<Value> = inner
            .entries
            .values()
            .map(|e| {
                let mut v = json!({
                    "pid": e.pid,
                    "namespace": e.info.namespace,
                    "pod": e.info.pod,
                    "container": e.info.container,
                    "command": e.info.command,
                    "tty": e.info.tty,
                    "kind": match e.info.kind { ProcessKind::Exec => "exec", ProcessKind::Attach => "attach" },
                });
                if let Some(log) = &e.stdin_log {
                    v["stdinBytes"] = json!(log.total());
                    v["stdinTail"] = json!(log.tail());
                }
                v
            })
            .collect();
        Value::Array(list)
    }

    /// How many processes are live.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, container: &str) -> ProcessInfo {
        ProcessInfo {
            namespace: "ns".into(),
            pod: "p".into(),
            uid: uid.into(),
            container: container.into(),
            command: vec!["sleep".into(), "1".into()],
            tty: false,
            kind: ProcessKind::Attach,
        }
    }

    #[test]
    fn entries_are_listed_until_removed() {
        let registry = ProcessRegistry::default();
        let log = Arc::new(StdinLog::default());
        log.record(b"hello");
        // Pid 0 is never signalled (kill_group refuses pgid <= 1), so a fake entry is safe.
        let id = registry.register(info("u", "c"), 0, None, Some(log.clone())).unwrap();
        let listed = registry.to_json();
        assert_eq!(listed[0]["kind"], "attach");
        assert_eq!(listed[0]["stdinBytes"], 5);
        assert_eq!(listed[0]["stdinTail"], "hello");
        assert_eq!(listed[0]["command"], json!(["sleep", "1"]));
        registry.remove(id);
        assert_eq!(registry.to_json(), json!([]));
        registry.stop();
        assert_eq!(registry.register(info("u", "c"), 0, None, None), Err(Stopped));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn stdin_log_keeps_the_last_4k() {
        let log = StdinLog::default();
        log.record(&[b'a'; 4000]);
        log.record(&[b'b'; 200]);
        assert_eq!(log.total(), 4200);
        let tail = log.tail();
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with(&"b".repeat(200)));
    }
}
