//! The per-subscription object cache, keyed by namespace and name.
//!
//! Generic over the object it holds: natively a `serde_json::Value`; in the browser the
//! JavaScript object the page's own `JSON.parse` built, so that an object is parsed once and
//! never copied to reach the application. Per object it keeps only what the protocol needs (the
//! name, under its namespace's one copy), the object itself, and the object's position in the
//! list its reader last took, which lets the reader patch that list instead of rebuilding it
//! ([`ObjectCache::take_view_change`]).
//!
//! Per namespace, the names in sorted chunks of at most [`CHUNK`] entries (a two-level B-tree
//! whose leaves fill completely when objects arrive in key order, as a snapshot does), rather
//! than one sorted vector or a `BTreeMap`: in the browser's wasm memory, which never shrinks, a
//! ten-thousand-entry vector's doubling left 92 bytes per pod behind and `BTreeMap`'s half-full
//! nodes 52 (Node, 10000 pods); full chunks leave the entry and its name. The namespaces, few,
//! are a sorted vector.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::frames::EventType;

/// The objects of one subscription, in namespace/name order.
#[derive(Debug, Clone)]
pub struct ObjectCache<O = Value> {
    /// Namespace → name → object, sorted by namespace; no namespace without objects.
    namespaces: Vec<(Box<str>, Names<O>)>,
    len: usize,
    /// Whether the membership changed since the last [`ObjectCache::take_view_change`]: the
    /// reader's list must be rebuilt. True for a new cache (its reader has no list yet).
    rebuild: bool,
    /// Otherwise the positions replaced since then, with their new objects, in order (a list
    /// longer than the cache turns into a rebuild).
    patched: Vec<(u32, O)>,
}

/// The most entries a chunk holds: an insertion moves at most this many, a full chunk's
/// vector is exactly this long (it grows by doubling from 4 and is split, never grown, past it).
const CHUNK: usize = 64;

/// The objects of one namespace, in name order: sorted chunks, none empty, none longer than
/// [`CHUNK`]. An object after every other starts a new chunk once the last is full, so a
/// snapshot fills every chunk; one in between splits its full chunk in two. Chunks emptied by
/// deletions go; chunks thinned by them stay (a collection shrinks rarely, and refills).
#[derive(Debug, Clone)]
struct Names<O> {
    chunks: Vec<Vec<(Box<str>, Held<O>)>>,
}

impl<O> Names<O> {
    /// The chunk `name` is in or belongs in, and its place there.
    fn locate(&self, name: &str) -> (usize, Result<usize, usize>) {
        // After every name held: a snapshot's objects come in key order, each one of these.
        if let Some(last) = self.chunks.last()
            && last.last().is_some_and(|(held, _)| &**held < name)
        {
            return (self.chunks.len() - 1, Err(last.len()));
        }
        let chunk = self.chunks.partition_point(|chunk| chunk.last().is_some_and(|(last, _)| &**last < name)).min(self.chunks.len().saturating_sub(1));
        match self.chunks.get(chunk) {
            Some(entries) => (chunk, entries.binary_search_by(|(held, _)| (**held).cmp(name))),
            None => (0, Err(0)),
        }
    }

    fn get(&self, name: &str) -> Option<&Held<O>> {
        let (chunk, place) = self.locate(name);
        place.ok().map(|index| &self.chunks[chunk][index].1)
    }

    /// Adds an object under a name not held.
    fn insert(&mut self, name: &str, held: Held<O>) {
        if let (chunk, Err(index)) = self.locate(name) {
            self.insert_at(chunk, index, name, held);
        }
    }

    /// Adds an object at the place [`Names::locate`] found for its name.
    fn insert_at(&mut self, chunk: usize, index: usize, name: &str, held: Held<O>) {
        let entry = (Box::from(name), held);
        let last = chunk + 1 == self.chunks.len();
        let Some(entries) = self.chunks.get_mut(chunk) else {
            self.chunks.push(vec![entry]);
            return;
        };
        if entries.len() < CHUNK {
            entries.insert(index, entry);
        } else if index == CHUNK && last {
            self.chunks.push(vec![entry]);
        } else {
            let mut right: Vec<_> = entries.drain(CHUNK / 2..).collect();
            if index <= CHUNK / 2 {
                entries.insert(index, entry);
            } else {
                right.insert(index - CHUNK / 2, entry);
            }
            self.chunks.insert(chunk + 1, right);
        }
    }

    fn remove(&mut self, name: &str) -> Option<Held<O>> {
        let (chunk, Ok(index)) = self.locate(name) else { return None };
        let (_, held) = self.chunks[chunk].remove(index);
        if self.chunks[chunk].is_empty() {
            self.chunks.remove(chunk);
        }
        Some(held)
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Held<O>)> {
        self.chunks.iter().flatten().map(|(name, held)| (&**name, held))
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Held<O>> {
        self.chunks.iter_mut().flatten().map(|(_, held)| held)
    }
}

/// One object and its position in the reader's last list (meaningful while the membership is
/// unchanged since then).
#[derive(Debug, Clone)]
struct Held<O> {
    object: O,
    slot: u32,
}

/// What changed in a cache since its reader last looked ([`ObjectCache::take_view_change`]).
#[derive(Debug, PartialEq)]
pub enum ViewChange<'a, O> {
    /// Nothing: the reader's list is still right.
    Unchanged,
    /// Only these positions hold another object (the same key, a newer version), in the order
    /// they changed: copy the previous list and set them.
    Patch(Vec<(usize, O)>),
    /// The membership changed: here is the whole list, in key order.
    Rebuild(Vec<&'a O>),
}

impl<O> Default for ObjectCache<O> {
    fn default() -> Self {
        ObjectCache { namespaces: Vec::new(), len: 0, rebuild: true, patched: Vec::new() }
    }
}

/// Two caches are equal when they hold the same objects under the same keys (what their
/// readers last saw does not count).
impl<O: PartialEq> PartialEq for ObjectCache<O> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.entries().eq(other.entries())
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

/// An iterator that knows its length.
struct Counted<I> {
    inner: I,
    remaining: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

impl<O> ObjectCache<O> {
    fn namespace(&self, namespace: &str) -> Result<usize, usize> {
        self.namespaces.binary_search_by(|(held, _)| (**held).cmp(namespace))
    }

    fn names(&self, namespace: &str) -> Option<&Names<O>> {
        self.namespace(namespace).ok().map(|index| &self.namespaces[index].1)
    }

    fn entries(&self) -> impl Iterator<Item = ((&str, &str), &O)> {
        self.namespaces.iter().flat_map(|(namespace, names)| names.iter().map(move |(name, held)| ((&**namespace, name), &held.object)))
    }

    /// Applies one event to the object under `key` (`(namespace, name)`).
    pub fn apply_keyed(&mut self, event_type: EventType, key: (&str, &str), object: O)
    where
        O: Clone,
    {
        let (namespace, name) = key;
        match event_type {
            EventType::Added | EventType::Modified => {
                let held = Held { object, slot: 0 };
                match self.namespace(namespace) {
                    // Located once: where it is, or where it goes.
                    Ok(index) => match self.namespaces[index].1.locate(name) {
                        (chunk, Ok(at)) => {
                            let old = &mut self.namespaces[index].1.chunks[chunk][at].1;
                            if !self.rebuild {
                                if self.patched.len() >= self.len {
                                    self.rebuild = true;
                                    self.patched = Vec::new();
                                } else {
                                    self.patched.push((old.slot, held.object.clone()));
                                }
                            }
                            old.object = held.object;
                            return;
                        }
                        (chunk, Err(at)) => self.namespaces[index].1.insert_at(chunk, at, name, held),
                    },
                    Err(index) => {
                        let mut names = Names { chunks: Vec::new() };
                        names.insert(name, held);
                        self.namespaces.insert(index, (namespace.into(), names));
                    }
                }
                self.len += 1;
                self.membership_changed();
            }
            EventType::Deleted => {
                let Ok(index) = self.namespace(namespace) else { return };
                let names = &mut self.namespaces[index].1;
                if names.remove(name).is_none() {
                    return;
                }
                if names.is_empty() {
                    self.namespaces.remove(index);
                }
                self.len -= 1;
                self.membership_changed();
            }
        }
    }

    fn membership_changed(&mut self) {
        self.rebuild = true;
        self.patched = Vec::new();
    }

    /// Whether an object is held under `key`.
    pub fn holds_key(&self, key: (&str, &str)) -> bool {
        self.get(key.0, key.1).is_some()
    }

    /// Drops every object whose key `keys` (namespace → names, as an `inventory` frame lists
    /// them) does not list, and returns the dropped objects' last states, in key order.
    pub fn drop_unlisted(&mut self, keys: &BTreeMap<String, Vec<String>>) -> Vec<O> {
        let listed: BTreeSet<(&str, &str)> = keys.iter().flat_map(|(namespace, names)| names.iter().map(move |name| (namespace.as_str(), name.as_str()))).collect();
        let mut dropped = Vec::new();
        for (namespace, names) in &mut self.namespaces {
            let gone: Vec<Box<str>> = names.iter().map(|(name, _)| name).filter(|name| !listed.contains(&(&**namespace, *name))).map(Box::from).collect();
            dropped.extend(gone.iter().filter_map(|name| names.remove(name)).map(|held| held.object));
        }
        self.namespaces.retain(|(_, names)| !names.is_empty());
        if !dropped.is_empty() {
            self.len -= dropped.len();
            self.membership_changed();
        }
        dropped
    }

    /// The objects, in key order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &O> {
        Counted { inner: self.entries().map(|(_, object)| object), remaining: self.len }
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&O> {
        self.names(namespace)?.get(name).map(|held| &held.object)
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What changed since the previous call (the first call rebuilds): the one reader of the
    /// cache (the browser's `getSnapshot()`) patches its previous list with it, so reading after
    /// `k` replacements costs `k` writes, not a conversion of every object, and an unchanged
    /// item stays the same object.
    pub fn take_view_change(&mut self) -> ViewChange<'_, O> {
        if std::mem::take(&mut self.rebuild) {
            self.patched = Vec::new();
            let all = self.namespaces.iter_mut().flat_map(|(_, names)| names.values_mut());
            return ViewChange::Rebuild(
                all.enumerate()
                    .map(|(slot, held)| {
                        held.slot = slot as u32;
                        let held: &Held<O> = held;
                        &held.object
                    })
                    .collect(),
            );
        }
        if self.patched.is_empty() {
            return ViewChange::Unchanged;
        }
        ViewChange::Patch(std::mem::take(&mut self.patched).into_iter().map(|(slot, object)| (slot as usize, object)).collect())
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
        assert_eq!(cache.take_view_change(), ViewChange::Patch(vec![(2, c2), (0, a3)]), "only the replaced positions, with their new objects");
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..proptest::prelude::ProptestConfig::default() })]

        /// Many objects (chunks filled, split and emptied) in any order, some deleted: the cache
        /// holds what a plain ordered map would, in its order, and a reader that applies every
        /// view change always has the cache's list.
        #[test]
        fn the_cache_is_an_ordered_map_and_its_reader_keeps_up(ops in proptest::collection::vec((0u8..3, 0u16..400, 0u8..4), 1..1500)) {
            let mut cache = ObjectCache::default();
            let mut model = BTreeMap::new();
            let mut reader: Vec<Value> = Vec::new();
            for (step, (namespace, name, action)) in ops.into_iter().enumerate() {
                let (namespace, name) = (format!("ns{namespace}"), format!("pod-{name:03}"));
                let object = pod(&namespace, &name, step as u32);
                if action == 0 {
                    cache.apply(EventType::Deleted, &object);
                    model.remove(&(namespace, name));
                } else {
                    cache.apply(EventType::Modified, &object);
                    model.insert((namespace, name), object);
                }
                if step % 7 == 0 {
                    match cache.take_view_change() {
                        ViewChange::Unchanged => {}
                        ViewChange::Patch(replaced) => replaced.into_iter().for_each(|(index, object)| reader[index] = object),
                        ViewChange::Rebuild(all) => reader = all.into_iter().cloned().collect(),
                    }
                    proptest::prop_assert_eq!(&reader, &cache.items().cloned().collect::<Vec<_>>());
                }
            }
            proptest::prop_assert_eq!(cache.len(), model.len());
            proptest::prop_assert_eq!(cache.items().cloned().collect::<Vec<_>>(), model.values().cloned().collect::<Vec<_>>());
            for ((namespace, name), object) in &model {
                proptest::prop_assert_eq!(cache.get(namespace, name), Some(object));
            }
        }
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
