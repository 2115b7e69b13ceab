//! What one upstream watch knows: the objects (its local store), the version it is at, and a
//! bounded ring of recent changes that resuming subscribers replay from.
//!
//! Resource versions stay opaque (API Concepts: compare only for equality): a resume point is
//! served from the ring only if it is exactly a version the ring recorded (an event's, a
//! bookmark's, or the list's).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use kubemux_protocol::frames::EventType;

/// One object as JSON text, shared by every subscriber's frame.
pub type ObjectJson = Arc<str>;

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

/// The store and ring of one upstream watch.
#[derive(Debug)]
pub struct WatchCache {
    objects: BTreeMap<(String, String), ObjectJson>,
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

    /// Forgets the version (after a 410): the next step is a relist.
    pub fn expire(&mut self) {
        self.rv = None;
    }

    /// Replaces everything with a fresh list.
    pub fn replace(&mut self, objects: BTreeMap<(String, String), ObjectJson>, rv: String) {
        self.objects = objects;
        self.ring.clear();
        self.mark(rv);
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event_type: EventType, key: (String, String), object: ObjectJson, rv: String) {
        match event_type {
            EventType::Added | EventType::Modified => {
                self.objects.insert(key, object.clone());
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
        self.objects.values()
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
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
