//! Fan-out of a process's output to whoever is listening: one exec session, any number of
//! attach sessions, or nobody (an orphaned exec), in which case output is read and dropped so
//! the process never blocks on a full pipe.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

/// How many chunks a listener may have queued before the process waits for it; a slow
/// client slows the process, as in Kubernetes, instead of growing memory.
pub(crate) const LISTENER_QUEUE: usize = 64;

/// A piece of output, with the channel it belongs on (`STDOUT` or `STDERR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// 1 (stdout, also everything from a PTY) or 2 (stderr).
    pub channel: u8,
    /// The bytes.
    pub data: Bytes,
}

struct Inner {
    listeners: Vec<mpsc::Sender<Chunk>>,
    open_streams: usize,
}

/// See the module docs. Readers publish; when every stream a process has reached EOF, the
/// hub closes and listeners see the end of their channel.
pub(crate) struct OutputHub {
    inner: Mutex<Inner>,
}

impl OutputHub {
    /// A hub fed by `streams` readers (0 means closed from the start).
    pub fn new(streams: usize) -> OutputHub {
        OutputHub { inner: Mutex::new(Inner { listeners: Vec::new(), open_streams: streams }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new listener, which gets output published from now on. After the hub closed, the
    /// receiver ends at once.
    pub fn subscribe(&self) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        let mut inner = self.lock();
        if inner.open_streams > 0 {
            inner.listeners.push(tx);
        }
        rx
    }

    /// The current listeners, pruned of those that went away.
    fn snapshot(&self) -> Vec<mpsc::Sender<Chunk>> {
        let mut inner = self.lock();
        inner.listeners.retain(|l| !l.is_closed());
        inner.listeners.clone()
    }

    /// Publishes from a plain thread (PTY readers), waiting for slow listeners.
    pub fn publish_blocking(&self, chunk: Chunk) {
        for listener in self.snapshot() {
            // A listener that went away meanwhile is simply skipped.
            let _ = listener.blocking_send(chunk.clone());
        }
    }

    /// Publishes from a task (pipe readers), waiting for slow listeners.
    pub async fn publish(&self, chunk: Chunk) {
        for listener in self.snapshot() {
            let _ = listener.send(chunk.clone()).await;
        }
    }

    /// One stream reached EOF. When the last one does, listeners are released so their
    /// receivers end once they have read what is queued.
    pub fn finish_stream(&self) {
        let mut inner = self.lock();
        inner.open_streams = inner.open_streams.saturating_sub(1);
        if inner.open_streams == 0 {
            inner.listeners.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(s: &'static str) -> Chunk {
        Chunk { channel: 1, data: Bytes::from_static(s.as_bytes()) }
    }

    #[tokio::test]
    async fn listeners_get_output_after_they_subscribe_and_the_end() {
        let hub = OutputHub::new(2);
        hub.publish(chunk("before")).await; // nobody listening: dropped, never blocks
        let mut a = hub.subscribe();
        hub.publish(chunk("one")).await;
        let b = hub.subscribe();
        drop(b); // a listener that leaves does not block the others
        hub.publish(chunk("two")).await;
        hub.finish_stream();
        hub.publish(chunk("three")).await; // the other stream is still open
        hub.finish_stream();
        let mut got = Vec::new();
        while let Some(c) = a.recv().await {
            got.push(c.data);
        }
        assert_eq!(got, ["one", "two", "three"]);
        // Subscribing to a closed hub ends at once.
        assert!(hub.subscribe().recv().await.is_none());
        assert!(OutputHub::new(0).subscribe().recv().await.is_none());
    }
}
