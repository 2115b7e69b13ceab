//! The per-subscription object cache, keyed by namespace and name.
//!
//! Generic over the object it holds: natively a `serde_json::Value`; in the browser the
//! JavaScript object the page's own `JSON.parse` built, so that an object is parsed once and
//! never copied to reach the application. Per object it keeps only what the protocol needs (the
//! key) and the object itself, in one vector sorted by key: a snapshot arrives in key order, so
//! filling it appends, and an object's index is its position in the list the application reads,
//! which lets a reader patch the previous list instead of rebuilding it ([`ObjectCache::take_view_change`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::frames::EventType;

/// The objects of one subscription, in namespace/name order.
#[derive(Debug, Clone)]
pub struct ObjectCache<O = Value> {
    entries: Vec<Held<O>>,
    /// Whether the membership changed since the last [`ObjectCache::take_view_change`]: the
    /// reader's list must be rebuilt. True for a new cache (its reader has no list yet).
    rebuild: bool,
    /// Otherwise the indices replaced since then (repeats allowed; a list longer than the cache
    /// turns into a rebuild).
    patched: Vec<u32>,
}

/// One object and its key. The namespace is shared with a neighbour of the same namespace (the
/// vector is sorted, so objects of one namespace are neighbours): ten thousand pods of one
/// namespace hold one copy of its name.
#[derive(Debug, Clone)]
struct Held<O> {
    namespace: Arc<str>,
    name: Box<str>,
    object: O,
}

impl<O> Held<O> {
    fn key(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

/// What changed in a cache since its reader last looked ([`ObjectCache::take_view_change`]).
#[derive(Debug, PartialEq)]
pub enum ViewChange<'a, O> {
    /// Nothing: the reader's list is still right.
    Unchanged,
    /// Only these positions hold another object (the same key, a newer version): copy the
    /// previous list and replace them.
    Patch(Vec<(usize, &'a O)>),
    /// The membership changed: here is the whole list, in key order.
    Rebuild(Vec<&'a O>),
}

impl<O> Default for ObjectCache<O> {
    fn default() -> Self {
        ObjectCache { entries: Vec::new(), rebuild: true, patched: Vec::new() }
    }
}

/// Two caches are equal when they hold the same objects under the same keys (what their
/// readers last saw does not count).
impl<O: PartialEq> PartialEq for ObjectCache<O> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len() && self.entries.iter().zip(&other.entries).all(|(a, b)| a.key() == b.key() && a.object == b.object)
    }
}

/// The cache key of an object: `(namespace, name)`; `None` when it has no name.
pub fn object_key(object: &Value) -> Option<(String, String)> {
    let (namespace, name) = key_of(object)?;
    Some((namespace.to_owned(), name.to_owned()))
}

/// [`object_key`], borrowed.
pub(crate) fn key_of(object: &Value) -> Option<(&str, &str)> {
    let meta = object.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default();
    Some((namespace, name))
}

impl ObjectCache<Value> {
    /// Applies one event, reading its key from the object. Objects without a name are ignored.
    pub fn apply(&mut self, event_type: EventType, object: &Value) {
        if let Some(key) = key_of(object) {
            self.apply_keyed(event_type, key, object.clone());
        }
    }

    /// Whether an object with `object`'s key is held.
    pub fn holds(&self, object: &Value) -> bool {
        key_of(object).is_some_and(|key| self.holds_key(key))
    }
}

impl<O> ObjectCache<O> {
    fn find(&self, key: (&str, &str)) -> Result<usize, usize> {
        self.entries.binary_search_by(|held| held.key().cmp(&key))
    }

    /// Applies one event to the object under `key` (`(namespace, name)`).
    pub fn apply_keyed(&mut self, event_type: EventType, key: (&str, &str), object: O) {
        match (event_type, self.find(key)) {
            (EventType::Added | EventType::Modified, Ok(index)) => {
                self.entries[index].object = object;
                if !self.rebuild {
                    if self.patched.len() >= self.entries.len() {
                        self.rebuild = true;
                        self.patched = Vec::new();
                    } else {
                        self.patched.push(index as u32);
                    }
                }
            }
            (EventType::Added | EventType::Modified, Err(index)) => {
                let (namespace, name) = key;
                let neighbour = [index.checked_sub(1), Some(index)].into_iter().flatten().filter_map(|i| self.entries.get(i)).find(|held| &*held.namespace == namespace);
                let namespace = neighbour.map_or_else(|| Arc::from(namespace), |held| held.namespace.clone());
                self.entries.insert(index, Held { namespace, name: name.into(), object });
                self.membership_changed();
            }
            (EventType::Deleted, Ok(index)) => {
                self.entries.remove(index);
                self.membership_changed();
            }
            (EventType::Deleted, Err(_)) => {}
        }
    }

    fn membership_changed(&mut self) {
        self.rebuild = true;
        self.patched = Vec::new();
    }

    /// Whether an object is held under `key`.
    pub fn holds_key(&self, key: (&str, &str)) -> bool {
        self.find(key).is_ok()
    }

    /// Drops every object whose key `keys` (namespace → names, as an `inventory` frame lists
    /// them) does not list, and returns the dropped objects' last states, in key order.
    pub fn drop_unlisted(&mut self, keys: &BTreeMap<String, Vec<String>>) -> Vec<O> {
        let listed: BTreeSet<(&str, &str)> = keys.iter().flat_map(|(namespace, names)| names.iter().map(move |name| (namespace.as_str(), name.as_str()))).collect();
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries).into_iter().partition(|held| listed.contains(&held.key()));
        self.entries = kept;
        if !dropped.is_empty() {
            self.membership_changed();
        }
        dropped.into_iter().map(|held| held.object).collect()
    }

    /// The objects, in key order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &O> {
        self.entries.iter().map(|held| &held.object)
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&O> {
        self.find((namespace, name)).ok().map(|index| &self.entries[index].object)
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What changed since the previous call (the first call rebuilds): the one reader of the
    /// cache (the browser's `getSnapshot()`) patches its previous list with it, so reading after
    /// `k` changes costs `O(k)` conversions, not `O(n)`, and an unchanged item stays the same
    /// object.
    pub fn take_view_change(&mut self) -> ViewChange<'_, O> {
        if std::mem::take(&mut self.rebuild) {
            self.patched = Vec::new();
            return ViewChange::Rebuild(self.items().collect());
        }
        if self.patched.is_empty() {
            return ViewChange::Unchanged;
        }
        let patched = std::mem::take(&mut self.patched);
        ViewChange::Patch(patched.into_iter().filter_map(|index| self.entries.get(index as usize).map(|held| (index as usize, &held.object))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, version: u32) -> Value {
        serde_json::json!({"metadata": {"namespace": namespace, "name": name, "resourceVersion": version.to_string()}})
    }

    #[test]
    fn a_reader_patches_modifications_and_rebuilds_on_membership_changes() {
        let mut cache = ObjectCache::default();
        assert_eq!(cache.take_view_change(), ViewChange::Rebuild(vec![]), "a new cache's reader has no list yet");
        for name in ["a", "b", "c"] {
            cache.apply(EventType::Added, &pod("ns", name, 1));
        }
        assert!(matches!(cache.take_view_change(), ViewChange::Rebuild(list) if list.len() == 3));
        assert_eq!(cache.take_view_change(), ViewChange::Unchanged);

        cache.apply(EventType::Modified, &pod("ns", "c", 2));
        cache.apply(EventType::Modified, &pod("ns", "a", 3));
        let (a3, c2) = (pod("ns", "a", 3), pod("ns", "c", 2));
        assert_eq!(cache.take_view_change(), ViewChange::Patch(vec![(2, &c2), (0, &a3)]), "only the replaced positions, with their new objects");
        assert_eq!(cache.take_view_change(), ViewChange::Unchanged);

        cache.apply(EventType::Modified, &pod("ns", "b", 4));
        cache.apply(EventType::Deleted, &pod("ns", "a", 5));
        let (b4, c2) = (pod("ns", "b", 4), pod("ns", "c", 2));
        assert_eq!(cache.take_view_change(), ViewChange::Rebuild(vec![&b4, &c2]), "a deletion shifts positions: the whole list");

        cache.apply(EventType::Deleted, &pod("ns", "zz", 6));
        assert_eq!(cache.take_view_change(), ViewChange::Unchanged, "deleting what is not held changes nothing");
        for version in 7..20 {
            cache.apply(EventType::Modified, &pod("ns", "b", version));
        }
        assert!(matches!(cache.take_view_change(), ViewChange::Rebuild(list) if list.len() == 2), "more patches than objects: rebuilt instead");
    }

    #[test]
    fn objects_are_kept_in_namespace_then_name_order_whatever_the_arrival_order() {
        let mut cache = ObjectCache::default();
        for (namespace, name) in [("b", "x"), ("a", "z"), ("", "node"), ("a", "y"), ("b", "a")] {
            cache.apply(EventType::Added, &pod(namespace, name, 1));
        }
        let keys: Vec<(String, String)> = cache.items().filter_map(object_key).collect();
        let expected = [("", "node"), ("a", "y"), ("a", "z"), ("b", "a"), ("b", "x")];
        assert_eq!(keys, expected.map(|(namespace, name)| (namespace.to_owned(), name.to_owned())));
        let dropped = cache.drop_unlisted(&BTreeMap::from([("a".to_owned(), vec!["z".to_owned()]), ("b".to_owned(), vec!["x".to_owned()])]));
        assert_eq!(dropped.iter().filter_map(object_key).collect::<Vec<_>>(), vec![("".to_owned(), "node".to_owned()), ("a".to_owned(), "y".to_owned()), ("b".to_owned(), "a".to_owned())]);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", "z").is_some() && cache.get("a", "y").is_none());
    }
}
