//! A connection's outbound queue: bounded in bytes, fair across subscriptions, drained by the
//! socket's single writer task.
//!
//! Producers (the session and the upstream watch tasks) never wait: a push either queues or, when
//! the byte limit is reached, the subscriptions with the most queued data lose their queue and
//! are marked overflowed. Overflowed subscriptions drop further events until the client has
//! drained below half the limit; then the session asks the registry to `reset` them
//! (`docs/PROTOCOL.md` §6). A slow browser so costs its own subscriptions a reset, never the
//! proxy's memory or other connections' latency (DESIGN.md invariant 5).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use kubemux_protocol::frames::{EventType, encode_event_raw};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// What a queued snapshot object costs against the byte limit besides its text: the pointer.
/// The text counts too: the queue keeps it alive after the upstream cache has replaced it.
const SNAPSHOT_ENTRY_COST: usize = 16;

/// What one queued snapshot object pins: its shared JSON text and the pointer to it.
fn snapshot_entry_cost(object: &str) -> usize {
    object.len() + SNAPSHOT_ENTRY_COST
}

/// What the writer sends next.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// A close frame with this code and reason; nothing is sent after it.
    Close(u16, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Live,
    /// Lost its queue; drops events until the client drains.
    Overflowed,
    /// Drained: waiting for the registry's reset and snapshot.
    AwaitingReset,
}

/// One queued item of a subscription.
#[derive(Debug)]
pub enum Item {
    /// A frame, ready to send.
    Frame(String),
    /// An `event` frame in two parts, joined as the writer sends it: the subscription's head and
    /// the event's body, which every subscriber of the event shares ([`super::encode`]).
    /// Charged the frame's length, like a frame.
    Event {
        /// The subscription's `{"op":"event","id":…`.
        head: Arc<str>,
        /// The event's `,"type":…,"object":…}`.
        body: Arc<str>,
    },
    /// `ADDED` events for these objects, encoded one at a time as the writer gets to them, so a
    /// snapshot is never copied per frame. It is charged the text it pins, released object by
    /// object as the writer sends them.
    Snapshot(std::vec::IntoIter<Arc<str>>),
}

impl Item {
    fn cost(&self) -> usize {
        match self {
            Item::Frame(frame) => frame.len(),
            Item::Event { head, body } => head.len() + body.len(),
            Item::Snapshot(objects) => objects.as_slice().iter().map(|object| snapshot_entry_cost(object)).sum(),
        }
    }
}

#[derive(Debug)]
struct SubQueue {
    frames: VecDeque<Item>,
    bytes: usize,
    state: QueueState,
    sent: Sent,
}

impl SubQueue {
    fn new() -> SubQueue {
        SubQueue { frames: VecDeque::new(), bytes: 0, state: QueueState::Live, sent: Sent::default() }
    }
}

/// What a queue handed the writer: the per-connection and per-subscription half of the cost
/// meter (`stats`, `docs/PROTOCOL.md` §3). Bytes are the frames' text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames.
    pub frames: u64,
    /// Of them, `event` frames.
    pub events: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `reset`s queued (the subscription's).
    pub resets: u64,
    /// Changes its projection hid, not sent (the subscription's).
    pub hidden: u64,
}

#[derive(Debug, Default)]
struct Inner {
    control: VecDeque<String>,
    subs: HashMap<Arc<str>, SubQueue>,
    /// Subscriptions with queued frames, in round-robin order.
    ready: VecDeque<Arc<str>>,
    total: usize,
    close: Option<(u16, &'static str)>,
    finished: bool,
    /// Every frame handed out, control frames included.
    sent: Sent,
}

/// The outbound queue of one connection.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    wake_writer: Notify,
    /// Woken when overflowed subscriptions are ready for their reset.
    pub wake_session: Notify,
    limit: usize,
    metrics: Arc<Metrics>,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped: the subscription is overflowed (a reset will follow) or gone.
    Dropped,
}

impl Outbox {
    /// An outbox holding at most `limit` bytes; `kubemux_queued_bytes` follows its size.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Outbox> {
        Arc::new(Outbox { inner: Mutex::new(Inner::default()), wake_writer: Notify::new(), wake_session: Notify::new(), limit, metrics })
    }

    /// Adds to (or, negative, takes from) the queued total and its gauge.
    fn account(&self, inner: &mut Inner, delta: isize) {
        inner.total = inner.total.saturating_add_signed(delta);
        self.metrics.queued_bytes.inc_by(delta as i64);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().total
    }

    /// Registers a subscription's queue (an id reused after a fatal error keeps what is still
    /// queued for it, such as that error).
    pub fn add_subscription(&self, id: &Arc<str>) {
        let mut inner = self.lock();
        let queue = inner.subs.entry(id.clone()).or_insert_with(SubQueue::new);
        queue.state = QueueState::Live;
        queue.sent = Sent::default();
    }

    /// Whether a subscription's queue takes frames (it exists and has not overflowed).
    pub fn is_live(&self, id: &str) -> bool {
        self.lock().subs.get(id).is_some_and(|q| q.state == QueueState::Live)
    }

    /// What the connection's queue handed the writer, what is queued now, and what each of
    /// `ids`' queues handed it (nothing for an id without a queue).
    pub fn sent<'a>(&self, ids: impl IntoIterator<Item = &'a Arc<str>>) -> (Sent, usize, Vec<Sent>) {
        let inner = self.lock();
        let subs = ids.into_iter().map(|id| inner.subs.get(id).map(|queue| queue.sent).unwrap_or_default()).collect();
        (inner.sent, inner.total, subs)
    }

    /// Counts a change `id`'s projection hid.
    pub fn count_hidden(&self, id: &str) {
        if let Some(queue) = self.lock().subs.get_mut(id) {
            queue.sent.hidden += 1;
        }
    }

    /// Counts a `reset` queued for `id`.
    pub fn count_reset(&self, id: &str) {
        if let Some(queue) = self.lock().subs.get_mut(id) {
            queue.sent.resets += 1;
        }
    }

    /// Drops a subscription's queue if nothing is left in it.
    pub fn remove_if_drained(&self, id: &str) {
        let mut inner = self.lock();
        if inner.subs.get(id).is_some_and(|q| q.frames.is_empty()) {
            inner.subs.remove(id);
        }
    }

    /// Drops a subscription's queue; its later frames are dropped.
    pub fn remove_subscription(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(queue) = inner.subs.remove(id) {
            self.account(&mut inner, -(queue.bytes as isize));
            inner.ready.retain(|r| &**r != id);
        }
    }

    /// Queues a connection-level frame (pong, error without id). Dropped when the queue is
    /// full: a client that does not read gets no more answers.
    pub fn push_control(&self, frame: String) -> Pushed {
        let mut inner = self.lock();
        if inner.close.is_some() || inner.total + frame.len() > self.limit {
            return Pushed::Dropped;
        }
        self.account(&mut inner, frame.len() as isize);
        inner.control.push_back(frame);
        drop(inner);
        self.wake_writer.notify_one();
        Pushed::Queued
    }

    /// Queues a frame of subscription `id`, in order with its other frames.
    pub fn push(&self, id: &Arc<str>, frame: String) -> Pushed {
        self.push_item(id, Item::Frame(frame))
    }

    /// Queues an item of subscription `id`, in order with its other items.
    pub fn push_item(&self, id: &Arc<str>, item: Item) -> Pushed {
        let mut inner = self.lock();
        if inner.close.is_some() || inner.subs.get(id).is_none_or(|q| q.state != QueueState::Live) {
            return Pushed::Dropped;
        }
        let len = item.cost();
        if inner.total + len > self.limit {
            self.overflow(&mut inner, len, None);
            if inner.subs.get(id).is_none_or(|q| q.state != QueueState::Live) {
                return Pushed::Dropped;
            }
        }
        let queue = inner.subs.get_mut(id).expect("checked above");
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(item);
        queue.bytes += len;
        self.account(&mut inner, len as isize);
        if was_empty {
            inner.ready.push_back(id.clone());
        }
        drop(inner);
        self.wake_writer.notify_one();
        Pushed::Queued
    }

    /// Replaces an overflowed (or live) subscription's queue with a reset sequence, making it
    /// live again. Returns `Dropped` if the subscription is gone or the connection closing.
    ///
    /// The sequence is admitted whole: other subscriptions overflow to make room for it, never
    /// its own, so a snapshot larger than the limit still reaches a client that reads (it would
    /// otherwise overflow and be reset forever). The queue so holds at most the limit or one
    /// such sequence, whichever is larger.
    pub fn push_reset(&self, id: &Arc<str>, items: Vec<Item>) -> Pushed {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Pushed::Dropped;
        }
        let Some(queue) = inner.subs.get_mut(id) else { return Pushed::Dropped };
        let dropped = std::mem::take(&mut queue.frames);
        let dropped_bytes = std::mem::replace(&mut queue.bytes, 0);
        queue.state = QueueState::Live;
        self.account(&mut inner, -(dropped_bytes as isize));
        drop(dropped);
        inner.ready.retain(|r| r != id);
        self.append_whole(inner, id, items)
    }

    /// Appends a snapshot's items (its objects, part by part as a list brings them, and its
    /// `synced`) to a live subscription's queue, admitted whole like [`Outbox::push_reset`]'s
    /// sequence: other subscriptions overflow to make room, never this one, so a snapshot
    /// larger than the limit reaches a client that reads instead of overflowing on its own
    /// `synced` (and being sent again after a `reset`). `Dropped` if the subscription is gone,
    /// overflowed or the connection closing.
    pub fn push_whole(&self, id: &Arc<str>, items: Vec<Item>) -> Pushed {
        let inner = self.lock();
        if inner.close.is_some() || inner.subs.get(id).is_none_or(|q| q.state != QueueState::Live) {
            return Pushed::Dropped;
        }
        self.append_whole(inner, id, items)
    }

    fn append_whole(&self, mut inner: MutexGuard<'_, Inner>, id: &Arc<str>, items: Vec<Item>) -> Pushed {
        let cost: usize = items.iter().map(Item::cost).sum();
        self.overflow(&mut inner, cost, Some(id));
        // `overflow` spares `id`, so its queue is still there; were it not, the sequence has
        // nowhere to go, which is what `Dropped` says.
        let Some(queue) = inner.subs.get_mut(id) else { return Pushed::Dropped };
        let was_empty = queue.frames.is_empty();
        queue.frames.extend(items);
        queue.bytes += cost;
        let queued = was_empty && !queue.frames.is_empty();
        self.account(&mut inner, cost as isize);
        if queued {
            inner.ready.push_back(id.clone());
        }
        drop(inner);
        self.wake_writer.notify_one();
        Pushed::Queued
    }

    /// Marks the heaviest subscriptions (but `spare`) overflowed until `incoming` more bytes fit.
    fn overflow(&self, inner: &mut Inner, incoming: usize, spare: Option<&Arc<str>>) {
        while inner.total + incoming > self.limit {
            let heaviest = inner.subs.iter().filter(|(id, q)| q.state == QueueState::Live && q.bytes > 0 && Some(*id) != spare).max_by_key(|(_, q)| q.bytes).map(|(id, _)| id.clone());
            let Some(id) = heaviest else { break };
            let queue = inner.subs.get_mut(&id).expect("just found");
            queue.frames.clear();
            let dropped = std::mem::replace(&mut queue.bytes, 0);
            queue.state = QueueState::Overflowed;
            self.metrics.overflows.inc();
            self.account(inner, -(dropped as isize));
            inner.ready.retain(|r| *r != id);
        }
        // With nothing left to drop, the incoming item alone is too big; it is queued if its
        // subscription had nothing queued (see `push_reset`).
    }

    /// Subscriptions whose reset is due (taken once each).
    pub fn take_due_resets(&self) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        if inner.total <= self.limit / 2 {
            for (id, queue) in inner.subs.iter_mut() {
                if queue.state == QueueState::Overflowed {
                    queue.state = QueueState::AwaitingReset;
                    due.push(id.clone());
                }
            }
        }
        due
    }

    /// Asks the writer to send a close frame after what is queued for control, then stop.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some((code, reason));
        }
        drop(inner);
        self.wake_writer.notify_one();
    }

    /// The next frame for the writer; `None` once the close frame has been handed out.
    pub async fn next(&self) -> Option<Outgoing> {
        loop {
            let notified = self.wake_writer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(next) = self.pop() {
                return next;
            }
            notified.await;
        }
    }

    /// `Some(None)`: finished; `Some(Some(x))`: send x; `None`: nothing yet. With [`Outbox::drain`],
    /// what the writer calls after every completed send, so it is also where a drained client is
    /// noticed.
    fn pop(&self) -> Option<Option<Outgoing>> {
        let mut inner = self.lock();
        let next = match self.pop_locked(&mut inner) {
            Some(Some((outgoing, cost))) => {
                self.account(&mut inner, -(cost as isize));
                Some(Some(outgoing))
            }
            finished_or_empty => finished_or_empty.map(|_| None),
        };
        self.after_pop(inner);
        next
    }

    /// Moves queued frames into `batch` until they pass `budget` bytes or nothing is queued, under
    /// one lock and with one update of the queued-bytes gauge (which every connection shares):
    /// what the writer sends with one flush. Stops after the close frame.
    pub fn drain(&self, budget: usize, batch: &mut Vec<Outgoing>) {
        let mut inner = self.lock();
        let (mut bytes, mut released) = (0usize, 0usize);
        while bytes < budget {
            let Some(Some((outgoing, cost))) = self.pop_locked(&mut inner) else { break };
            released += cost;
            let close = match &outgoing {
                Outgoing::Text(text) => {
                    bytes += text.len();
                    false
                }
                Outgoing::Close(..) => true,
            };
            batch.push(outgoing);
            if close {
                break;
            }
        }
        self.account(&mut inner, -(released as isize));
        self.after_pop(inner);
    }

    /// After frames left: a drained client's overflowed subscriptions are due their reset.
    fn after_pop(&self, inner: MutexGuard<'_, Inner>) {
        let resets_due = inner.total <= self.limit / 2 && inner.subs.values().any(|q| q.state == QueueState::Overflowed);
        drop(inner);
        if resets_due {
            self.wake_session.notify_one();
        }
    }

    /// The next item and what it released of the byte limit (the caller accounts for it).
    fn pop_locked(&self, inner: &mut Inner) -> Option<Option<(Outgoing, usize)>> {
        if inner.finished {
            return Some(None);
        }
        if let Some((code, reason)) = inner.close {
            inner.finished = true;
            return Some(Some((Outgoing::Close(code, reason), 0)));
        }
        if let Some(frame) = inner.control.pop_front() {
            let cost = frame.len();
            inner.sent.frames += 1;
            inner.sent.bytes += frame.len() as u64;
            return Some(Some((Outgoing::Text(frame), cost)));
        }
        while let Some(id) = inner.ready.pop_front() {
            let Some(queue) = inner.subs.get_mut(&id) else { continue };
            let (frame, cost, event) = match queue.frames.front_mut() {
                None => continue,
                Some(Item::Snapshot(objects)) => match objects.next() {
                    Some(object) => {
                        if objects.len() == 0 {
                            queue.frames.pop_front();
                        }
                        (encode_event_raw(&id, EventType::Added, &object), snapshot_entry_cost(&object), true)
                    }
                    None => {
                        queue.frames.pop_front();
                        inner.ready.push_front(id);
                        continue;
                    }
                },
                Some(Item::Frame(_) | Item::Event { .. }) => match queue.frames.pop_front() {
                    Some(Item::Frame(frame)) => {
                        let cost = frame.len();
                        (frame, cost, false)
                    }
                    Some(Item::Event { head, body }) => (super::encode::frame(&head, &body), head.len() + body.len(), true),
                    _ => unreachable!("the front is a frame or an event"),
                },
            };
            queue.bytes -= cost;
            for sent in [&mut queue.sent, &mut inner.sent] {
                sent.frames += 1;
                sent.events += u64::from(event);
                sent.bytes += frame.len() as u64;
            }
            if !queue.frames.is_empty() {
                inner.ready.push_back(id);
            }
            return Some(Some((Outgoing::Text(frame), cost)));
        }
        None
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let total = self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).total;
        self.metrics.queued_bytes.dec_by(total as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// A roomy outbox with subscriptions `a` and `b`.
    fn two_subscriptions() -> (Arc<Outbox>, Arc<str>, Arc<str>) {
        let outbox = Outbox::new(1 << 20, Arc::default());
        let (a, b) = (id("a"), id("b"));
        outbox.add_subscription(&a);
        outbox.add_subscription(&b);
        (outbox, a, b)
    }

    #[tokio::test]
    async fn round_robin_keeps_per_subscription_order() {
        let (outbox, a, b) = two_subscriptions();
        for f in ["a1", "a2", "a3"] {
            outbox.push(&a, f.into());
        }
        outbox.push(&b, "b1".into());
        outbox.push_control("pong".into());
        let mut got = Vec::new();
        for _ in 0..5 {
            let Some(Outgoing::Text(t)) = outbox.next().await else { panic!("a text frame was queued") };
            got.push(t);
        }
        assert_eq!(got, ["pong", "a1", "b1", "a2", "a3"]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_drops_the_heaviest_and_resets_after_draining() {
        let outbox = Outbox::new(100, Arc::default());
        let (heavy, light) = (id("heavy"), id("light"));
        outbox.add_subscription(&heavy);
        outbox.add_subscription(&light);
        for _ in 0..8 {
            assert_eq!(outbox.push(&heavy, "x".repeat(10)), Pushed::Queued);
        }
        outbox.push(&light, "y".repeat(10));
        // 90 bytes queued; 20 more do not fit: the heavy subscription loses its queue.
        assert_eq!(outbox.push(&light, "z".repeat(20)), Pushed::Queued);
        assert_eq!(outbox.push(&heavy, "x".into()), Pushed::Dropped);
        assert_eq!(outbox.queued_bytes(), 30);
        assert_eq!(outbox.take_due_resets(), vec![heavy.clone()]);
        assert!(outbox.take_due_resets().is_empty(), "taken once");
        outbox.push_reset(&heavy, vec![Item::Frame("reset".into()), Item::Frame("snapshot".into())]);
        let mut got = Vec::new();
        while outbox.queued_bytes() > 0 {
            let Some(Outgoing::Text(t)) = outbox.next().await else { panic!("a text frame was queued") };
            got.push(t);
        }
        assert_eq!(got, ["y".repeat(10), "reset".into(), "z".repeat(20), "snapshot".into()]);
    }

    fn padded_objects(count: usize, pad: usize) -> Vec<Arc<str>> {
        (0..count).map(|i| Arc::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)))).collect()
    }

    #[tokio::test]
    async fn snapshots_flow_lazily_and_release_their_charge_object_by_object() {
        let outbox = Outbox::new(10_000, Arc::default());
        let a = id("a");
        outbox.add_subscription(&a);
        let objects = padded_objects(50, 100);
        let bytes: usize = objects.iter().map(|o| o.len()).sum();
        assert_eq!(outbox.push_item(&a, Item::Snapshot(objects.into_iter())), Pushed::Queued);
        outbox.push(&a, "synced".into());
        let charged = outbox.queued_bytes();
        assert!(charged >= bytes + "synced".len(), "a queued snapshot is charged at least the text it pins: {charged} < {bytes}");
        let mut frames = Vec::new();
        while outbox.queued_bytes() > 0 {
            let before = outbox.queued_bytes();
            let Some(Outgoing::Text(t)) = outbox.next().await else { panic!("a text frame was queued") };
            assert!(outbox.queued_bytes() < before, "each sent object releases its charge");
            frames.push(t);
        }
        assert_eq!(frames.len(), 51);
        assert!(frames[0].starts_with(r#"{"op":"event","id":"a","type":"ADDED","object":{"n":0"#), "{}", frames[0]);
        assert_eq!(frames[50], "synced");
    }

    /// The limit bounds what queued snapshots pin: the snapshot that would take the queue past
    /// it overflows its subscription (which gets a reset once the client drains), even when the
    /// upstream cache has since replaced every object and the queue is all that holds them.
    #[tokio::test]
    async fn queued_snapshots_overflow_at_the_limit() {
        const LIMIT: usize = 100_000;
        let outbox = Outbox::new(LIMIT, Arc::default());
        let mut pinned: HashMap<Arc<str>, usize> = HashMap::new();
        let mut first_overflow = None;
        for i in 0..20 {
            let sub = id(&format!("s{i}"));
            outbox.add_subscription(&sub);
            // Each snapshot is ~10 KB of objects: 9 fit beside each other, the 10th does not.
            let objects = padded_objects(10, 1000);
            pinned.insert(sub.clone(), objects.iter().map(|o| o.len()).sum());
            outbox.push_item(&sub, Item::Snapshot(objects.into_iter()));
            pinned.retain(|sub, _| outbox.is_live(sub));
            let held: usize = pinned.values().sum();
            assert!(held <= LIMIT, "after {} snapshots, queued ones pin {held} bytes, over the {LIMIT} limit", i + 1);
            assert!(outbox.queued_bytes() >= held && outbox.queued_bytes() <= LIMIT);
            if first_overflow.is_none() && pinned.len() <= i {
                first_overflow = Some(i + 1);
            }
        }
        assert_eq!(first_overflow, Some(10), "the overflow comes when the snapshots reach the limit");
    }

    /// A reset whose snapshot alone is larger than the limit is still delivered (the other
    /// subscriptions make room), so a client that reads converges instead of being reset forever.
    #[tokio::test]
    async fn a_reset_larger_than_the_limit_is_admitted_alone() {
        let outbox = Outbox::new(1000, Arc::default());
        let (big, other) = (id("big"), id("other"));
        outbox.add_subscription(&big);
        outbox.add_subscription(&other);
        outbox.push(&other, "o".repeat(100));
        outbox.push(&big, "b".repeat(100));
        let items = vec![Item::Frame("reset".into()), Item::Snapshot(padded_objects(5, 300).into_iter()), Item::Frame("synced".into())];
        assert_eq!(outbox.push_reset(&big, items), Pushed::Queued);
        assert!(outbox.is_live(&big) && !outbox.is_live(&other), "the other subscription made room");
        let mut frames = Vec::new();
        while outbox.queued_bytes() > 0 {
            let Some(Outgoing::Text(t)) = outbox.next().await else { panic!("a text frame was queued") };
            frames.push(t);
        }
        assert_eq!((frames.len(), frames[0].as_str(), frames[6].as_str()), (7, "reset", "synced"));
        assert_eq!(outbox.take_due_resets(), vec![other]);
    }

    /// What the writer drains in one wakeup: what is queued, in the order `next` would give it,
    /// up to the budget, the queued bytes (and their gauge) released; then nothing until more
    /// is pushed; and nothing after the close frame.
    #[tokio::test]
    async fn a_batch_drains_what_is_queued_in_order_up_to_its_budget() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1 << 20, metrics.clone());
        let (a, b) = (id("a"), id("b"));
        outbox.add_subscription(&a);
        outbox.add_subscription(&b);
        for frame in ["a1", "a2", "a3"] {
            outbox.push(&a, frame.into());
        }
        outbox.push(&b, "b1".into());
        let Some(Outgoing::Text(first)) = outbox.next().await else { panic!("a text frame was queued") };
        let mut batch = vec![Outgoing::Text(first)];
        outbox.drain(4, &mut batch);
        let texts = |batch: &[Outgoing]| batch.iter().map(|o| if let Outgoing::Text(t) = o { t.clone() } else { format!("{o:?}") }).collect::<Vec<_>>();
        assert_eq!(texts(&batch), ["a1", "b1", "a2"], "the budget (4 bytes) ends the batch after the frame that reaches it");
        assert_eq!((outbox.queued_bytes(), metrics.queued_bytes.get()), (2, 2));
        batch.clear();
        outbox.drain(1 << 16, &mut batch);
        assert_eq!(texts(&batch), ["a3"]);
        assert_eq!((outbox.queued_bytes(), metrics.queued_bytes.get()), (0, 0));
        batch.clear();
        outbox.drain(1 << 16, &mut batch);
        assert!(batch.is_empty(), "nothing is queued");
        outbox.push(&a, "a4".into());
        outbox.close(1000, "");
        outbox.drain(1 << 16, &mut batch);
        assert_eq!(batch, [Outgoing::Close(1000, "")], "a close skips what is still queued");
        batch.clear();
        outbox.drain(1 << 16, &mut batch);
        assert!(batch.is_empty(), "nothing after the close frame");
        assert_eq!(outbox.next().await, None);
    }

    #[tokio::test]
    async fn close_is_last() {
        let outbox = Outbox::new(100, Arc::default());
        outbox.close(1001, "going away");
        assert_eq!(outbox.push_control("late".into()), Pushed::Dropped);
        assert_eq!(outbox.next().await, Some(Outgoing::Close(1001, "going away")));
        assert_eq!(outbox.next().await, None);
    }
}
