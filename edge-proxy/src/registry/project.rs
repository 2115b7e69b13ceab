//! The default projection of a watch (`docs/PROTOCOL.md` §2 `projection`), on the proxy's shared
//! object text: objects without `metadata.managedFields` and the last-applied annotation, and no
//! `MODIFIED` whose object so projected changed in nothing but its `resourceVersion`.
//!
//! An event's projection is computed once, by the first subscriber that asks for it, and shared
//! by every other ([`SharedEvent::projected`]); a subscriber without a projection never pays for
//! it. An object with nothing to drop keeps its text (a substring check, no parse).
//!
//! So is its delta (`docs/PROTOCOL.md` §2 `deltas`, §3 `patch`): a `MODIFIED` as a merge patch
//! against the object's previous version, whole or projected ([`SharedEvent::delta`]), worked
//! out once for every subscriber that asked for deltas, and not at all when none did.

use std::sync::{Arc, OnceLock};

use kubemux_protocol::delta::{LAST_APPLIED, Projection, merge_patch};
use kubemux_protocol::frames::EventType;
use serde_json::Value;

use super::cache::{ObjectJson, ObjectKey};
use super::request::resource_version_of;
use crate::mux::encode::{self, EventBody};

/// `object` as the default projection keeps it: the same text when it has nothing to drop, else
/// parsed, pruned and written again. Text that does not parse is kept as it is.
pub fn project(object: &ObjectJson) -> ObjectJson {
    project_text(object).map_or_else(|| object.clone(), Arc::from)
}

/// The default projection of `object`'s text, or `None` when it is to be sent as it is (nothing
/// to drop, found without a parse when neither name occurs in it; or text that does not parse).
pub fn project_text(object: &str) -> Option<String> {
    if !object.contains("\"managedFields\"") && !object.contains(LAST_APPLIED) {
        return None;
    }
    projected_value(object).map(|value| value.to_string())
}

/// `object` parsed and projected, or `None` when it does not parse or has nothing to drop.
fn projected_value(object: &str) -> Option<Value> {
    let mut value: Value = serde_json::from_str(object).ok()?;
    Projection::default().apply(&mut value).then_some(value)
}

/// Whether `new` differs from `old` in more than the projection drops and
/// `metadata.resourceVersion`: if not, a projecting subscriber is not sent the change. Text that
/// does not parse counts as changed (it is sent).
pub fn changed_beyond_version(old: &str, new: &str) -> bool {
    let comparable = |text: &str| -> Option<Value> {
        let mut value: Value = serde_json::from_str(text).ok()?;
        Projection::default().apply(&mut value);
        value.get_mut("metadata").and_then(Value::as_object_mut)?.remove("resourceVersion");
        Some(value)
    };
    match (comparable(old), comparable(new)) {
        (Some(old), Some(new)) => old != new,
        _ => true,
    }
}

/// A `MODIFIED` as a `patch` frame's body (after the subscription's `{"op":"patch","id":…`):
/// `,"base":…,"namespace":…,"name":…,"resourceVersion":…,"patch":…}`.
#[derive(Debug)]
pub struct Delta {
    /// The version the patch applies to: the object's previous one.
    pub base: Arc<str>,
    /// The frame body.
    pub body: EventBody,
}

/// The object's previous state, kept for an event when a subscriber projects or takes deltas.
#[derive(Debug)]
pub struct Previous {
    /// Its text.
    pub object: ObjectJson,
    /// Its key.
    pub key: ObjectKey,
}

/// One watch event as every subscriber gets it: the frame body in the API server's layout, its
/// version, and what a projecting or delta-taking subscriber gets instead, each computed once
/// when first asked for.
#[derive(Debug)]
pub struct SharedEvent {
    /// The whole object's frame body.
    pub body: EventBody,
    /// The event's version.
    pub version: Arc<str>,
    event_type: EventType,
    object: ObjectJson,
    /// The object's previous state, when the cache held it (a `MODIFIED`) and a subscriber
    /// may need it.
    previous: Option<Previous>,
    projected: OnceLock<Option<EventBody>>,
    /// The delta of the whole object, and of the projected one.
    deltas: [OnceLock<Option<Delta>>; 2],
    /// The patch of the version alone, for a change the projection hides.
    touch: OnceLock<Option<Delta>>,
    previous_version: OnceLock<Option<Arc<str>>>,
}

impl SharedEvent {
    /// The event `event_type` of `object` at `version`, whose frame body is `body`; `previous`
    /// is what the cache held for the object before.
    pub fn new(body: EventBody, version: Arc<str>, event_type: EventType, object: ObjectJson, previous: Option<Previous>) -> Arc<SharedEvent> {
        Arc::new(SharedEvent { body, version, event_type, object, previous, projected: OnceLock::new(), deltas: Default::default(), touch: OnceLock::new(), previous_version: OnceLock::new() })
    }

    /// The object's key, when its previous state was kept.
    pub fn key(&self) -> Option<&ObjectKey> {
        self.previous.as_ref().map(|previous| &previous.key)
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The previous state's `metadata.resourceVersion`, when it was kept.
    pub fn previous_version(&self) -> Option<&Arc<str>> {
        self.previous_version.get_or_init(|| self.previous.as_ref().and_then(|previous| resource_version_of(&previous.object)).map(Arc::from)).as_ref()
    }

    /// The `MODIFIED` as a merge patch against the previous state, whole or `projected`; `None`
    /// when it goes as a whole object: another event type, no previous state, text that does
    /// not parse or has no version, a change a merge patch cannot carry (a `null` it would read
    /// as a removal), or a patch frame no smaller than the whole event's.
    pub fn delta(&self, projected: bool) -> Option<&Delta> {
        self.deltas[usize::from(projected)].get_or_init(|| self.compute_delta(projected)).as_ref()
    }

    fn compute_delta(&self, projected: bool) -> Option<Delta> {
        let previous = self.previous.as_ref().filter(|_| self.event_type == EventType::Modified)?;
        let parse = |text: &str| -> Option<Value> {
            let mut value: Value = serde_json::from_str(text).ok()?;
            if projected {
                Projection::default().apply(&mut value);
            }
            Some(value)
        };
        let (old, new) = (parse(&previous.object)?, parse(&self.object)?);
        let patch = merge_patch(&old, &new).ok()??;
        let delta = self.patch_frame(&patch.to_string())?;
        // The whole event is what the subscriber would get instead: the frame heads are within
        // a byte of each other.
        let whole = if projected { self.projected().map_or(usize::MAX, |body| body.as_str().len()) } else { self.body.as_str().len() };
        (delta.body.as_str().len() < whole).then_some(delta)
    }

    /// A change the projection hides, for a subscriber that takes deltas: a patch of the version
    /// alone, so that its copy's version stays the object's (`None` when the previous state or
    /// its version is not known).
    pub fn touch(&self) -> Option<&Delta> {
        self.touch
            .get_or_init(|| {
                let version = serde_json::to_string(&*self.version).ok()?;
                self.patch_frame(&format!("{{\"metadata\":{{\"resourceVersion\":{version}}}}}"))
            })
            .as_ref()
    }

    /// The `patch` frame body carrying `patch` (JSON text) against the previous version.
    fn patch_frame(&self, patch: &str) -> Option<Delta> {
        let previous = self.previous.as_ref()?;
        let base = self.previous_version()?.clone();
        let (namespace, name) = &previous.key;
        let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
        let mut body = String::with_capacity(80 + patch.len());
        body.push_str(",\"base\":");
        body.push_str(&quoted(&base));
        if !namespace.is_empty() {
            body.push_str(",\"namespace\":");
            body.push_str(&quoted(namespace));
        }
        body.push_str(",\"name\":");
        body.push_str(&quoted(name));
        body.push_str(",\"resourceVersion\":");
        body.push_str(&quoted(&self.version));
        body.push_str(",\"patch\":");
        body.push_str(patch);
        body.push('}');
        Some(Delta { base, body: EventBody(Arc::from(body)) })
    }

    /// The whole projected object's event, for a hidden change that cannot go as a patch.
    pub fn body_projected_whole(&self) -> EventBody {
        encode::event_body(self.event_type, &project(&self.object))
    }

    /// The projected frame body, or `None` when a projecting subscriber is not sent this event
    /// (a `MODIFIED` that changed nothing the projection keeps but the version).
    pub fn projected(&self) -> Option<&EventBody> {
        self.projected
            .get_or_init(|| {
                if self.event_type == EventType::Modified && self.previous.as_ref().is_some_and(|previous| !changed_beyond_version(&previous.object, &self.object)) {
                    return None;
                }
                let object = project(&self.object);
                Some(if Arc::ptr_eq(&object, &self.object) { self.body.clone() } else { encode::event_body(self.event_type, &object) })
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(rv: u32, ready: bool, managed_time: &str) -> String {
        serde_json::json!({
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "resourceVersion": rv.to_string(),
                "annotations": {LAST_APPLIED: "{\"big\":true}", "team": "a"},
                "managedFields": [{"manager": "kubelet", "time": managed_time}],
            },
            "status": {"ready": ready},
        })
        .to_string()
    }

    #[test]
    fn the_projection_drops_what_dashboards_never_show_and_keeps_the_rest() {
        let object: ObjectJson = Arc::from(pod(5, true, "t1"));
        let projected: Value = serde_json::from_str(&project(&object)).unwrap();
        assert_eq!(projected["metadata"].get("managedFields"), None);
        assert_eq!(projected["metadata"]["annotations"], serde_json::json!({"team": "a"}));
        assert_eq!(projected["status"]["ready"], true);
        let plain: ObjectJson = Arc::from(r#"{"metadata":{"name":"cm","resourceVersion":"3"},"data":{"k":"v"}}"#);
        assert!(Arc::ptr_eq(&project(&plain), &plain), "nothing to drop: the same text, unparsed");
    }

    /// A write that only stamps managedFields (and the version) is not sent to a projecting
    /// subscriber; one that changes what it keeps is, projected; an ADDED always is.
    #[test]
    fn a_change_the_projection_hides_is_not_sent() {
        let event = |event_type, new: String, previous: Option<String>| {
            let object: ObjectJson = Arc::from(new);
            SharedEvent::new(
                encode::event_body(event_type, &object),
                Arc::from("7"),
                event_type,
                object,
                previous.map(|previous| Previous { object: Arc::from(previous), key: ("default".into(), "web-1".into()) }),
            )
        };
        let stamped = event(EventType::Modified, pod(7, true, "t2"), Some(pod(5, true, "t1")));
        assert_eq!(stamped.projected(), None);
        let flipped = event(EventType::Modified, pod(7, false, "t2"), Some(pod(5, true, "t1")));
        let body = flipped.projected().expect("a real change is sent").as_str().to_owned();
        assert!(body.contains(r#""ready":false"#) && !body.contains("managedFields") && !body.contains(LAST_APPLIED), "{body}");
        assert!(flipped.body.as_str().contains("managedFields"), "the whole body is kept for the others");
        assert!(event(EventType::Added, pod(7, true, "t2"), None).projected().is_some());
        assert!(changed_beyond_version("{not json", &pod(1, true, "t")), "unreadable text is sent");
    }

    fn modified(new: String, previous: String) -> Arc<SharedEvent> {
        let object: ObjectJson = Arc::from(new);
        let previous = Previous { object: Arc::from(previous), key: ("default".into(), "web-1".into()) };
        SharedEvent::new(encode::event_body(EventType::Modified, &object), Arc::from("7"), EventType::Modified, object, Some(previous))
    }

    /// A `MODIFIED` goes as a patch against the previous version, whole or projected, worked
    /// out once; a change the projection hides, as a patch of the version alone; what a patch
    /// cannot carry, or would not make smaller, goes whole.
    #[test]
    fn a_delta_is_the_patch_against_the_previous_version_when_it_is_smaller() {
        let event = modified(pod(7, false, "t2"), pod(5, true, "t1"));
        let delta = event.delta(false).expect("a status flip is a small patch");
        assert_eq!(&*delta.base, "5");
        let frame = format!("{}{}", encode::patch_head("pods"), delta.body.as_str());
        let parsed: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed["op"], "patch");
        assert_eq!((parsed["base"].as_str(), parsed["namespace"].as_str(), parsed["name"].as_str(), parsed["resourceVersion"].as_str()), (Some("5"), Some("default"), Some("web-1"), Some("7")));
        assert_eq!(parsed["patch"], serde_json::json!({"metadata": {"resourceVersion": "7", "managedFields": [{"manager": "kubelet", "time": "t2"}]}, "status": {"ready": false}}));
        assert!(std::ptr::eq(delta, event.delta(false).unwrap()), "computed once");
        let projected = event.delta(true).expect("projected too");
        let parsed: Value = serde_json::from_str(&format!("{}{}", encode::patch_head("pods"), projected.body.as_str())).unwrap();
        assert_eq!(parsed["patch"], serde_json::json!({"metadata": {"resourceVersion": "7"}, "status": {"ready": false}}));
        let stamped = modified(pod(7, true, "t2"), pod(5, true, "t1"));
        assert!(stamped.projected().is_none(), "hidden from a projecting subscriber");
        let touch: Value = serde_json::from_str(&format!("{}{}", encode::patch_head("pods"), stamped.touch().unwrap().body.as_str())).unwrap();
        assert_eq!((touch["base"].as_str(), &touch["patch"]), (Some("5"), &serde_json::json!({"metadata": {"resourceVersion": "7"}})), "a delta taker gets the version alone");

        // A null the patch would read as a removal, a rewrite of everything, an ADDED: whole.
        let nulled = modified(serde_json::json!({"metadata": {"name": "web-1", "resourceVersion": "7"}, "status": {"ready": null}}).to_string(), pod(5, true, "t1"));
        assert!(nulled.delta(false).is_none());
        let rewritten = modified(
            serde_json::json!({"metadata": {"name": "web-1", "resourceVersion": "7"}, "spec": {"a": 1}}).to_string(),
            serde_json::json!({"metadata": {"name": "web-1", "resourceVersion": "5"}, "status": {"b": 2}}).to_string(),
        );
        assert!(rewritten.delta(false).is_none(), "a patch no smaller than the object");
        let object: ObjectJson = Arc::from(pod(7, true, "t"));
        assert!(SharedEvent::new(encode::event_body(EventType::Added, &object), Arc::from("7"), EventType::Added, object, None).delta(false).is_none());
    }
}
