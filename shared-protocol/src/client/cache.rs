//! The per-subscription object cache, keyed by namespace and name.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::frames::EventType;

/// The objects of one subscription, in namespace/name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectCache {
    objects: BTreeMap<(String, String), Value>,
}

/// The cache key of an object: `(namespace, name)`; `None` when it has no name.
pub fn object_key(object: &Value) -> Option<(String, String)> {
    let meta = object.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_owned();
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((namespace, name))
}

impl ObjectCache {
    /// Applies one event. Objects without a name are ignored.
    pub fn apply(&mut self, event_type: EventType, object: &Value) {
        let Some(key) = object_key(object) else { return };
        match event_type {
            EventType::Added | EventType::Modified => {
                self.objects.insert(key, object.clone());
            }
            EventType::Deleted => {
                self.objects.remove(&key);
            }
        }
    }

    /// Whether an object with `object`'s key is held.
    pub fn holds(&self, object: &Value) -> bool {
        object_key(object).is_some_and(|key| self.objects.contains_key(&key))
    }

    /// Drops every object whose key `keys` (namespace → names, as an `inventory` frame lists
    /// them) does not list, and returns the dropped objects' last states, in key order.
    pub fn drop_unlisted(&mut self, keys: &BTreeMap<String, Vec<String>>) -> Vec<Value> {
        let listed: BTreeSet<(&str, &str)> = keys.iter().flat_map(|(namespace, names)| names.iter().map(move |name| (namespace.as_str(), name.as_str()))).collect();
        let unlisted: Vec<(String, String)> = self.objects.keys().filter(|(namespace, name)| !listed.contains(&(namespace.as_str(), name.as_str()))).cloned().collect();
        unlisted.into_iter().filter_map(|key| self.objects.remove(&key)).collect()
    }

    /// The objects, in key order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.objects.values()
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
