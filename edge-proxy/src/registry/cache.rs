//! What one upstream watch knows: the objects (its local store), the version it is at, and a
//! bounded ring of recent changes that resuming subscribers replay from.
//!
//! Resource versions stay opaque (API Concepts: compare only for equality): a resume point is
//! served from the ring only if it is exactly a version the ring recorded (an event's, a
//! bookmark's, or the list's). Only where every version is an integer, as etcd's revisions are
//! (`integer_version`), does the store also answer "what changed after V" by comparing each
//! object's version with V ([`WatchCache::changed_since`], `docs/PROTOCOL.md` §4's inventory).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use kubemux_protocol::frames::EventType;

/// One object as JSON text, shared by every subscriber's frame.
pub type ObjectJson = Arc<str>;

/// An object's namespace (`""` when cluster-scoped) and name.
pub type ObjectKey = (String, String);

/// One stored object: its text, and its `metadata.resourceVersion` if that is an integer.
#[derive(Debug, Clone)]
pub struct Stored {
    json: ObjectJson,
    version: Option<u64>,
}

impl Stored {
    /// An object with its `metadata.resourceVersion` (`None` if it had none).
    pub fn new(json: ObjectJson, resource_version: Option<&str>) -> Stored {
        Stored { json, version: resource_version.and_then(integer_version) }
    }

    /// Its JSON text.
    pub fn json(&self) -> &ObjectJson {
        &self.json
    }
}

/// A resource version the proxy can order: a positive integer, written as the API server
/// writes one. `"0"` is not a version but "any" (the API server replays its current objects,
/// in name order), and `"+7"` or `"07"` would be sent upstream as another string.
pub fn integer_version(rv: &str) -> Option<u64> {
    let number = rv.parse::<u64>().ok().filter(|n| *n > 0)?;
    (number.to_string() == rv).then_some(number)
}

/// A recorded version: an event, or a marker (list or bookmark) with no event.
#[derive(Debug, Clone)]
struct RingEntry {
    rv: String,
    event: Option<(EventType, ObjectJson)>,
}

/// What a subscriber resuming from a version gets.
#[derive(Debug, PartialEq)]
pub enum Resume {
    /// The events after the version, in order.
    Replay(Vec<(EventType, ObjectJson)>),
    /// The version is not in the ring: reset and snapshot.
    Unavailable,
}

/// How a resume point is answered, in `docs/PROTOCOL.md` §4's order: what the store alone
/// decides ([`WatchCache::answer`]).
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The version is in the ring: the events after it, then `synced`.
    Replay(Vec<(EventType, ObjectJson)>),
    /// The client takes an inventory and every version is an integer, the client's older than
    /// the store's: the objects changed since it, the keys held, `synced`.
    Inventory(Vec<ObjectJson>),
    /// The client's version is newer than the store's (it was served by a replica whose watch
    /// is further on): `synced` at the client's version at once, then the shared stream with
    /// every event and bookmark at or before that version withheld (the client holds them).
    Ahead(u64),
    /// Both versions integers, the client's older, but the store cannot answer: a catch-up
    /// watch from `from`, handing over at `to`.
    CatchUp { from: u64, to: u64 },
    /// Nothing else applies: `reset` and the snapshot.
    Reset,
}

/// The store and ring of one upstream watch.
#[derive(Debug)]
pub struct WatchCache {
    objects: BTreeMap<ObjectKey, Stored>,
    rv: Option<String>,
    ring: VecDeque<RingEntry>,
    capacity: usize,
}

impl WatchCache {
    /// An empty cache keeping `capacity` ring entries.
    pub fn new(capacity: usize) -> Self {
        WatchCache { objects: BTreeMap::new(), rv: None, ring: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// The version the cache is at; `None` before the first list or after a 410.
    pub fn resource_version(&self) -> Option<&str> {
        self.rv.as_deref()
    }

    /// Forgets the version (after a 410) and what it held: the next step is a relist, and
    /// nothing is served from the store until it is done, so the old objects are not kept
    /// beside the new list's.
    pub fn expire(&mut self) {
        self.rv = None;
        self.objects.clear();
        self.ring.clear();
    }

    /// Replaces everything with a fresh list.
    pub fn replace(&mut self, objects: BTreeMap<ObjectKey, Stored>, rv: String) {
        self.objects = objects;
        self.ring.clear();
        self.mark(rv);
    }

    /// The object held under `key`, if any.
    pub fn get(&self, key: &ObjectKey) -> Option<&ObjectJson> {
        self.objects.get(key).map(Stored::json)
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event_type: EventType, key: ObjectKey, object: ObjectJson, rv: String) {
        match event_type {
            EventType::Added | EventType::Modified => {
                self.objects.insert(key, Stored::new(object.clone(), Some(&rv)));
            }
            EventType::Deleted => {
                self.objects.remove(&key);
            }
        }
        self.push(RingEntry { rv: rv.clone(), event: Some((event_type, object)) });
        self.rv = Some(rv);
    }

    /// Records a version with no change (list or bookmark).
    pub fn mark(&mut self, rv: String) {
        if self.rv.as_deref() != Some(rv.as_str()) || self.ring.is_empty() {
            self.push(RingEntry { rv: rv.clone(), event: None });
        }
        self.rv = Some(rv);
    }

    fn push(&mut self, entry: RingEntry) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }

    /// The current objects, in key order.
    pub fn snapshot(&self) -> impl Iterator<Item = &ObjectJson> {
        self.objects.values().map(|stored| &stored.json)
    }

    /// The keys held, in order: what an `inventory` frame lists.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.objects.keys().map(|(namespace, name)| (namespace.as_str(), name.as_str()))
    }

    /// The objects whose version is after `version`, in key order: what changed since a client
    /// consistent at `version` (an object at or before it is as that client holds it). `None`
    /// when some object's version is not an integer, so the store cannot tell.
    pub fn changed_since(&self, version: u64) -> Option<Vec<ObjectJson>> {
        let mut changed = Vec::new();
        for stored in self.objects.values() {
            if stored.version? > version {
                changed.push(stored.json.clone());
            }
        }
        Some(changed)
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// How a client consistent at `version` resumes (`inventory`: it sent
    /// `"resume":"inventory"`). A cache that has not listed yet answers `Reset`.
    pub fn answer(&self, version: &str, inventory: bool) -> Answer {
        let Some(current) = self.rv.as_deref() else { return Answer::Reset };
        if let Resume::Replay(events) = self.resume_from(version) {
            return Answer::Replay(events);
        }
        match (integer_version(version), integer_version(current)) {
            (Some(from), Some(to)) if from > to => Answer::Ahead(from),
            (Some(from), Some(to)) if from < to => match self.changed_since(from).filter(|_| inventory) {
                Some(changed) => Answer::Inventory(changed),
                None => Answer::CatchUp { from, to },
            },
            _ => Answer::Reset,
        }
    }

    /// The changes after `rv`, if the ring still reaches back to it.
    pub fn resume_from(&self, rv: &str) -> Resume {
        match self.ring.iter().rposition(|e| e.rv == rv) {
            Some(index) => Resume::Replay(self.ring.iter().skip(index + 1).filter_map(|e| e.event.clone()).collect()),
            None => Resume::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> (String, String) {
        ("ns".into(), n.into())
    }

    fn stored(json: &str, rv: &str) -> Stored {
        Stored::new(json.into(), Some(rv))
    }

    #[test]
    fn changed_since_compares_integer_versions_only() {
        let mut cache = WatchCache::new(4);
        cache.replace(BTreeMap::from([(key("a"), stored("{a}", "5")), (key("c"), stored("{c}", "9"))]), "10".into());
        cache.apply(EventType::Added, key("b"), "{b}".into(), "12".into());
        cache.apply(EventType::Modified, key("c"), "{c2}".into(), "13".into());
        cache.apply(EventType::Deleted, key("a"), "{a-}".into(), "14".into());
        let changed = |cache: &WatchCache, v| cache.changed_since(v).map(|objects| objects.iter().map(|o| o.to_string()).collect::<Vec<_>>());
        assert_eq!(changed(&cache, 8), Some(vec!["{b}".to_owned(), "{c2}".to_owned()]), "in key order, each at its current state");
        assert_eq!(changed(&cache, 12), Some(vec!["{c2}".to_owned()]));
        assert_eq!(changed(&cache, 14), Some(vec![]));
        assert_eq!(cache.keys().collect::<Vec<_>>(), vec![("ns", "b"), ("ns", "c")]);
        cache.apply(EventType::Added, key("d"), "{d}".into(), "opaque".into());
        assert_eq!(changed(&cache, 8), None, "a version the proxy cannot order: the store cannot tell");
    }

    /// §4's order: the ring, then (integer versions only) ahead, inventory or catch-up, else
    /// reset.
    #[test]
    fn a_resume_is_answered_by_replay_ahead_inventory_catch_up_or_reset() {
        let mut cache = WatchCache::new(4);
        assert_eq!(cache.answer("5", true), Answer::Reset, "not listed yet");
        cache.replace(BTreeMap::from([(key("a"), stored("{a}", "5")), (key("c"), stored("{c}", "9"))]), "10".into());
        cache.apply(EventType::Added, key("b"), "{b}".into(), "12".into());
        assert_eq!(cache.answer("10", true), Answer::Replay(vec![(EventType::Added, "{b}".into())]));
        assert_eq!(cache.answer("12", false), Answer::Replay(vec![]));
        assert_eq!(cache.answer("8", true), Answer::Inventory(vec!["{b}".into(), "{c}".into()]));
        assert_eq!(cache.answer("8", false), Answer::CatchUp { from: 8, to: 12 });
        for inventory in [true, false] {
            assert_eq!(cache.answer("13", inventory), Answer::Ahead(13), "a client ahead of the store");
            assert_eq!(cache.answer("900", inventory), Answer::Ahead(900));
        }
        for version in ["0", "opaque", "012", ""] {
            assert_eq!(cache.answer(version, true), Answer::Reset, "{version:?}");
        }
        cache.apply(EventType::Added, key("d"), "{d}".into(), "opaque".into());
        assert_eq!(cache.answer("8", true), Answer::Reset, "the store's version cannot be ordered");
        assert_eq!(cache.answer("13", true), Answer::Reset);
    }

    #[test]
    fn an_expired_cache_holds_nothing_until_it_is_listed_again() {
        let mut cache = WatchCache::new(4);
        cache.replace(BTreeMap::from([(key("a"), stored("{a}", "5"))]), "10".into());
        cache.apply(EventType::Added, key("b"), "{b}".into(), "12".into());
        cache.expire();
        assert_eq!((cache.resource_version(), cache.len()), (None, 0), "the relist's objects are the only ones held");
        assert_eq!(cache.answer("10", false), Answer::Reset);
        assert_eq!(cache.resume_from("10"), Resume::Unavailable);
        cache.replace(BTreeMap::from([(key("c"), stored("{c}", "20"))]), "20".into());
        assert_eq!(cache.snapshot().map(|o| o.to_string()).collect::<Vec<_>>(), ["{c}"]);
    }

    #[test]
    fn integer_versions_are_positive_and_canonical() {
        assert_eq!(integer_version("5"), Some(5));
        for rv in ["0", "", "+5", "05", "-1", "5a", " 5"] {
            assert_eq!(integer_version(rv), None, "{rv:?}");
        }
    }

    #[test]
    fn replays_from_recorded_versions_only() {
        let mut cache = WatchCache::new(4);
        cache.replace(BTreeMap::new(), "10".into());
        cache.apply(EventType::Added, key("a"), "{a}".into(), "11".into());
        cache.mark("12".into());
        cache.apply(EventType::Deleted, key("a"), "{a-}".into(), "13".into());
        assert_eq!(cache.resume_from("10"), Resume::Replay(vec![(EventType::Added, "{a}".into()), (EventType::Deleted, "{a-}".into())]));
        assert_eq!(cache.resume_from("12"), Resume::Replay(vec![(EventType::Deleted, "{a-}".into())]));
        assert_eq!(cache.resume_from("13"), Resume::Replay(vec![]));
        assert_eq!(cache.resume_from("9"), Resume::Unavailable);
        assert!(cache.is_empty());
        // The ring is bounded: the list marker falls off.
        cache.apply(EventType::Added, key("b"), "{b}".into(), "14".into());
        assert_eq!(cache.resume_from("10"), Resume::Unavailable);
        assert_eq!(cache.resource_version(), Some("14"));
    }
}
