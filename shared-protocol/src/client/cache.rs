//! The per-subscription object cache, keyed by namespace and name.

use std::collections::BTreeMap;

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
