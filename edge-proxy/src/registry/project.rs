//! The default projection of a watch (`docs/PROTOCOL.md` §2 `projection`), on the proxy's shared
//! object text: objects without `metadata.managedFields` and the last-applied annotation, and no
//! `MODIFIED` whose object so projected changed in nothing but its `resourceVersion`.
//!
//! An event's projection is computed once, by the first subscriber that asks for it, and shared
//! by every other ([`SharedEvent::projected`]); a subscriber without a projection never pays for
//! it. An object with nothing to drop keeps its text (a substring check, no parse).

use std::sync::{Arc, OnceLock};

use kubemux_protocol::delta::{LAST_APPLIED, Projection};
use kubemux_protocol::frames::EventType;
use serde_json::Value;

use super::cache::ObjectJson;
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

/// One watch event as every subscriber gets it: the frame body in the API server's layout, its
/// version, and what a projecting subscriber gets instead, computed once when first asked for.
#[derive(Debug)]
pub struct SharedEvent {
    /// The whole object's frame body.
    pub body: EventBody,
    /// The event's version.
    pub version: Arc<str>,
    event_type: EventType,
    object: ObjectJson,
    /// The object's previous state, when the cache held it (a `MODIFIED`).
    previous: Option<ObjectJson>,
    projected: OnceLock<Option<EventBody>>,
}

impl SharedEvent {
    /// The event `event_type` of `object` at `version`, whose frame body is `body`; `previous`
    /// is what the cache held for the object before.
    pub fn new(body: EventBody, version: Arc<str>, event_type: EventType, object: ObjectJson, previous: Option<ObjectJson>) -> Arc<SharedEvent> {
        Arc::new(SharedEvent { body, version, event_type, object, previous, projected: OnceLock::new() })
    }

    /// The projected frame body, or `None` when a projecting subscriber is not sent this event
    /// (a `MODIFIED` that changed nothing the projection keeps but the version).
    pub fn projected(&self) -> Option<&EventBody> {
        self.projected
            .get_or_init(|| {
                if self.event_type == EventType::Modified && self.previous.as_deref().is_some_and(|previous| !changed_beyond_version(previous, &self.object)) {
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
            SharedEvent::new(encode::event_body(event_type, &object), Arc::from("7"), event_type, object, previous.map(Arc::from))
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
}
