//! The object store: every object of every served resource, one global resourceVersion counter
//! (like etcd's revision), and a bounded history of change events that watches replay from.
//!
//! Everything is behind one `std::sync::Mutex`, held only for in-memory work and never across
//! an `.await`. Changes are announced twice: the latest revision on a `watch` channel (watches
//! wake and read the history from their own cursor, so a slow watch never blocks a writer), and
//! each event on a `broadcast` channel for the simulated kubelet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::resources::{self, ResourceDef};
use crate::status::ApiError;

/// The type of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created (or started matching a selector).
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted (or stopped matching a selector).
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// Whether a write is stored, or only checked and answered (`dryRun=All`): a dry run validates
/// as usual and returns what would be stored, but stores nothing, records no history, wakes no
/// watch and consumes no revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Store the change.
    Commit,
    /// Check the change and answer it, storing nothing.
    DryRun,
}

/// One change, at one revision.
#[derive(Debug)]
pub struct Event {
    /// The revision of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The resource type of the object.
    pub resource: &'static ResourceDef,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The new state; for `Deleted`, the last state with `resourceVersion` set to the delete's
    /// revision (reference §7.4 E2).
    pub object: Arc<Value>,
    /// The state before the change (`Modified`, `Deleted`).
    pub previous: Option<Arc<Value>>,
}

/// A watch asked to start before the oldest revision still in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The revision asked for.
    pub requested: u64,
    /// The oldest revision a watch can still start from.
    pub floor: u64,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

struct Inner {
    rv: u64,
    /// The oldest revision a watch may start from: every event after it is in `history`.
    floor: u64,
    objects: Vec<Objects>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
}

/// The simulator's object store.
pub struct Store {
    inner: Mutex<Inner>,
    latest: watch::Sender<u64>,
    events: broadcast::Sender<Arc<Event>>,
}

fn resource_index(resource: &ResourceDef) -> usize {
    resources::ALL.iter().position(|r| std::ptr::eq(*r, resource)).expect("resource is in resources::ALL")
}

/// Now, as the API server formats timestamps.
pub fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Whether `name` is a valid DNS-1123 subdomain, as object names must be.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

impl Store {
    /// An empty store whose revisions start above `first_rv` and which keeps the last
    /// `history_limit` events for watches to resume from.
    pub fn new(first_rv: u64, history_limit: usize) -> Store {
        let (latest, _) = watch::channel(first_rv);
        let (events, _) = broadcast::channel(4096);
        Store {
            inner: Mutex::new(Inner {
                rv: first_rv,
                floor: first_rv,
                objects: resources::ALL.iter().map(|_| Objects::new()).collect(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
            }),
            latest,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation is
        // prepared before it is applied), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current revision.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest revision a watch may start from.
    pub fn floor(&self) -> u64 {
        self.lock().floor
    }

    /// A receiver of the latest revision; it changes after every write.
    pub fn subscribe_revisions(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// A receiver of every change event (for the kubelet). Lagging receivers must resync from
    /// [`Store::list`].
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Every event after revision `after` and the revision they bring the reader up to, or
    /// `Expired` when history no longer reaches back that far.
    pub fn events_since(&self, after: u64) -> Result<(Vec<Arc<Event>>, u64), Expired> {
        let inner = self.lock();
        if after < inner.floor {
            return Err(Expired { requested: after, floor: inner.floor });
        }
        let start = inner.history.partition_point(|e| e.rv <= after);
        Ok((inner.history.range(start..).cloned().collect(), inner.rv))
    }

    /// One object.
    pub fn get(&self, resource: &'static ResourceDef, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects[resource_index(resource)].get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// The current revision and every object of `resource` (in `namespace`, or all), in key order.
    pub fn list(&self, resource: &'static ResourceDef, namespace: Option<&str>) -> (u64, Vec<Arc<Value>>) {
        let inner = self.lock();
        let items = filter_namespace(&inner.objects[resource_index(resource)], namespace).collect();
        (inner.rv, items)
    }

    /// The objects of `resource` as they were at revision `rv`, rebuilt by undoing the
    /// history after it. `Err` carries the floor when `rv` is too old.
    pub fn list_at(&self, resource: &'static ResourceDef, namespace: Option<&str>, rv: u64) -> Result<Vec<Arc<Value>>, Expired> {
        let inner = self.lock();
        if rv < inner.floor {
            return Err(Expired { requested: rv, floor: inner.floor });
        }
        let mut objects = inner.objects[resource_index(resource)].clone();
        for event in inner.history.iter().rev().take_while(|e| e.rv > rv) {
            if !std::ptr::eq(event.resource, resource) {
                continue;
            }
            let key = (event.namespace.clone(), event.name.clone());
            match (&event.kind, &event.previous) {
                (EventType::Added, _) => {
                    objects.remove(&key);
                }
                (_, Some(previous)) => {
                    objects.insert(key, previous.clone());
                }
                (_, None) => {}
            }
        }
        Ok(filter_namespace(&objects, namespace).collect())
    }

    /// Creates an object. Fills in name (from `generateName`), namespace, uid,
    /// creationTimestamp, generation and resourceVersion, and applies the simulator's defaults.
    pub fn create(&self, resource: &'static ResourceDef, namespace: &str, object: Value) -> Result<Arc<Value>, ApiError> {
        self.create_with(resource, namespace, object, Write::Commit)
    }

    /// [`Store::create`], or its dry run.
    pub fn create_with(&self, resource: &'static ResourceDef, namespace: &str, mut object: Value, write: Write) -> Result<Arc<Value>, ApiError> {
        prepare_body(resource, namespace, &mut object)?;
        let mut inner = self.lock();
        let generated = meta_str(&object, "name").is_none_or(str::is_empty);
        if generated {
            let prefix = meta_str(&object, "generateName").unwrap_or_default().to_owned();
            object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        validate_name(resource, &name)?;
        if resource.namespaced && !inner.objects[resource_index(&resources::NAMESPACES)].contains_key(&(String::new(), namespace.to_owned())) {
            return Err(ApiError::not_found("namespaces", namespace));
        }
        let key = (namespace.to_owned(), name.clone());
        if inner.objects[resource_index(resource)].contains_key(&key) {
            return Err(ApiError::already_exists(resource.plural, &name));
        }
        let meta = object["metadata"].as_object_mut().expect("prepare_body made metadata an object");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_timestamp()));
        if resource.generation {
            meta.insert("generation".into(), json!(1));
        }
        meta.remove("deletionTimestamp");
        crate::defaults::on_create(resource, &mut object);
        if write == Write::DryRun {
            // Nothing was stored, so the answer has no version yet, as the API server's.
            meta_remove(&mut object, "resourceVersion");
            return Ok(Arc::new(object));
        }
        Ok(inner.commit(&self.latest, &self.events, resource, key, EventType::Added, object))
    }

    /// Replaces an object (PUT). A non-empty `metadata.resourceVersion` in the body must match
    /// the stored one, or the update fails with 409 Conflict.
    pub fn update(&self, resource: &'static ResourceDef, namespace: &str, name: &str, object: Value) -> Result<Arc<Value>, ApiError> {
        self.update_with(resource, namespace, name, object, Write::Commit)
    }

    /// [`Store::update`], or its dry run.
    pub fn update_with(&self, resource: &'static ResourceDef, namespace: &str, name: &str, object: Value, write: Write) -> Result<Arc<Value>, ApiError> {
        self.modify_with(resource, namespace, name, write, |current| {
            let mut object = object;
            prepare_body(resource, namespace, &mut object)?;
            if meta_str(&object, "name").is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!("the name of the object ({}) does not match the name on the URL ({name})", meta_str(&object, "name").unwrap_or_default())));
            }
            match meta_str(&object, "resourceVersion") {
                Some(rv) if !rv.is_empty() && Some(rv) != meta_str(current, "resourceVersion") => {
                    return Err(ApiError::conflict(resource.plural, name));
                }
                _ => {}
            }
            *current = object;
            Ok(())
        })
    }

    /// Read-modify-write of one object under the store lock. `change` edits the current state;
    /// identity fields (name, namespace, uid, creationTimestamp) are kept, generation bumps when
    /// `spec` changed, and nothing is written if the object did not change.
    pub fn modify(
        &self,
        resource: &'static ResourceDef,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        self.modify_with(resource, namespace, name, Write::Commit, change)
    }

    /// [`Store::modify`], or its dry run (which answers with the current resourceVersion).
    pub fn modify_with(
        &self,
        resource: &'static ResourceDef,
        namespace: &str,
        name: &str,
        write: Write,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let current = inner.objects[resource_index(resource)].get(&key).cloned().ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        let mut object = (*current).clone();
        change(&mut object)?;
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            match current["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    object["metadata"].as_object_mut().map(|m| m.remove(field));
                }
            }
        }
        object["kind"] = json!(resource.kind);
        object["apiVersion"] = json!(resource.api_version());
        if resource.generation {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            let generation = if object.get("spec") != current.get("spec") { generation + 1 } else { generation };
            object["metadata"]["generation"] = json!(generation);
        } else if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("generation");
        }
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if object == *current {
            return Ok(current);
        }
        if write == Write::DryRun {
            return Ok(Arc::new(object));
        }
        Ok(inner.commit(&self.latest, &self.events, resource, key, EventType::Modified, object))
    }

    /// Deletes an object and returns its last state. Deleting a namespace deletes everything
    /// in it first.
    pub fn delete(&self, resource: &'static ResourceDef, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.delete_with(resource, namespace, name, Write::Commit)
    }

    /// [`Store::delete`], or its dry run (which answers with the object as it is, marked for
    /// deletion, and deletes nothing, not even a namespace's contents).
    pub fn delete_with(&self, resource: &'static ResourceDef, namespace: &str, name: &str, write: Write) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let current = inner.objects[resource_index(resource)].get(&key).cloned().ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        let mut last = (*current).clone();
        last["metadata"]["deletionTimestamp"] = json!(now_timestamp());
        if write == Write::DryRun {
            return Ok(Arc::new(last));
        }
        if resource.is_namespaces() {
            for member in resources::ALL.iter().copied().filter(|r| r.namespaced) {
                let keys: Vec<_> = inner.objects[resource_index(member)].range((name.to_owned(), String::new())..).take_while(|((ns, _), _)| ns == name).map(|(k, _)| k.clone()).collect();
                for k in keys {
                    let last = (*inner.objects[resource_index(member)][&k]).clone();
                    inner.commit(&self.latest, &self.events, member, k, EventType::Deleted, last);
                }
            }
        }
        Ok(inner.commit(&self.latest, &self.events, resource, key, EventType::Deleted, last))
    }

    /// Expires every revision up to now: the counter moves on by one, history is dropped, and
    /// watches from any earlier revision get `410 Expired`.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.floor = inner.rv;
        inner.history.clear();
        let rv = inner.rv;
        drop(inner);
        self.latest.send_replace(rv);
        rv
    }
}

impl Inner {
    /// Applies one change at the next revision, records and announces it.
    fn commit(
        &mut self,
        latest: &watch::Sender<u64>,
        events: &broadcast::Sender<Arc<Event>>,
        resource: &'static ResourceDef,
        key: (String, String),
        kind: EventType,
        mut object: Value,
    ) -> Arc<Value> {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(object);
        let map = &mut self.objects[resource_index(resource)];
        let previous = match kind {
            EventType::Deleted => map.remove(&key),
            _ => map.insert(key.clone(), object.clone()),
        };
        let event = Arc::new(Event { rv: self.rv, kind, resource, namespace: key.0, name: key.1, object: object.clone(), previous });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        latest.send_replace(self.rv);
        // No receivers is fine: the kubelet may not be running (e.g. in unit tests).
        let _ = events.send(event);
        object
    }
}

fn meta_remove(object: &mut Value, field: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove(field);
    }
}

fn filter_namespace<'a>(objects: &'a Objects, namespace: Option<&'a str>) -> impl Iterator<Item = Arc<Value>> + 'a {
    objects.iter().filter(move |((ns, _), _)| namespace.is_none_or(|want| ns == want)).map(|(_, v)| v.clone())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())])).collect()
}

fn validate_name(resource: &ResourceDef, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(resource.kind, name, &[("metadata.name", "FieldValueRequired", "Required value: name or generateName is required".into())]));
    }
    if !valid_name(name) {
        return Err(ApiError::invalid(resource.kind, name, &[("metadata.name", "FieldValueInvalid", format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))]));
    }
    Ok(())
}

/// Checks a request body's kind, apiVersion and namespace against the URL, and normalises it.
fn prepare_body(resource: &'static ResourceDef, namespace: &str, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    };
    if let Some(kind) = map.get("kind").and_then(Value::as_str)
        && kind != resource.kind
    {
        return Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match the expected kind ({})", resource.kind)));
    }
    if let Some(api_version) = map.get("apiVersion").and_then(Value::as_str)
        && api_version != resource.api_version()
    {
        return Err(ApiError::bad_request(format!("the API version in the data ({api_version}) does not match the expected API version ({})", resource.api_version())));
    }
    map.insert("kind".into(), json!(resource.kind));
    map.insert("apiVersion".into(), json!(resource.api_version()));
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if resource.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CONFIGMAPS, NAMESPACES};

    fn store_with_namespace() -> Store {
        let store = Store::new(1000, 100);
        store.create(&NAMESPACES, "", json!({"metadata": {"name": "default"}})).unwrap();
        store
    }

    #[test]
    fn revisions_are_global_and_deletes_carry_their_own() {
        let store = store_with_namespace();
        let a = store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "a"}})).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1002");
        let deleted = store.delete(&CONFIGMAPS, "default", "a").unwrap();
        assert_eq!(deleted["metadata"]["resourceVersion"], "1003");
        let (events, upto) = store.events_since(1001).unwrap();
        assert_eq!(upto, 1003);
        assert_eq!(events.iter().map(|e| (e.rv, e.kind)).collect::<Vec<_>>(), vec![(1002, EventType::Added), (1003, EventType::Deleted)]);
    }

    #[test]
    fn stale_update_conflicts() {
        let store = store_with_namespace();
        store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "a"}, "data": {"k": "1"}})).unwrap();
        let stale = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "2"}});
        assert_eq!(store.update(&CONFIGMAPS, "default", "a", stale).unwrap_err().reason, "Conflict");
        assert_eq!(store.create(&CONFIGMAPS, "nope", json!({"metadata": {"name": "a"}})).unwrap_err().code, 404);
        assert_eq!(store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "a"}})).unwrap_err().reason, "AlreadyExists");
    }

    #[test]
    fn history_rewinds_to_past_revisions_and_expires() {
        let store = store_with_namespace();
        store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "a"}, "data": {"v": "1"}})).unwrap();
        let at = store.current_rv();
        store.modify(&CONFIGMAPS, "default", "a", |o| {
            o["data"]["v"] = json!("2");
            Ok(())
        }).unwrap();
        store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "b"}})).unwrap();
        let past = store.list_at(&CONFIGMAPS, None, at).unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(past[0]["data"]["v"], "1");
        let floor = store.compact();
        assert!(store.events_since(at).is_err());
        assert_eq!(store.events_since(floor).unwrap().0.len(), 0);
    }

    #[test]
    fn namespace_delete_cascades() {
        let store = store_with_namespace();
        store.create(&CONFIGMAPS, "default", json!({"metadata": {"name": "a"}})).unwrap();
        store.delete(&NAMESPACES, "", "default").unwrap();
        assert!(store.list(&CONFIGMAPS, None).1.is_empty());
    }
}
