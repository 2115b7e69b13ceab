//! Event frames built once per event: a frame is `{"op":"event","id":<id>` (the subscription's
//! own head, written once per subscription) followed by `,"type":"…","object":<object>}` (the
//! event's body, written once per event and shared by every subscriber that gets it). Together
//! they are byte for byte what [`kubemux_protocol::frames::encode_event_raw`] writes.

use std::sync::Arc;

use kubemux_protocol::frames::EventType;

/// The head of every `event` frame of subscription `id`: `{"op":"event","id":<id as JSON>`.
pub fn event_head(id: &str) -> Arc<str> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| String::from("\"\""));
    let mut head = String::with_capacity(19 + id.len());
    head.push_str("{\"op\":\"event\",\"id\":");
    head.push_str(&id);
    Arc::from(head)
}

/// The head of every `patch` frame of subscription `id`: `{"op":"patch","id":<id as JSON>`;
/// a delta's body (the registry's `project::Delta`) follows it.
pub fn patch_head(id: &str) -> Arc<str> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| String::from("\"\""));
    Arc::from(format!("{{\"op\":\"patch\",\"id\":{id}"))
}

/// What follows the head in an `event` frame: `,"type":"<type>","object":<object_json>}`.
pub fn event_body(event_type: EventType, object_json: &str) -> EventBody {
    let mut body = String::with_capacity(22 + object_json.len());
    body.push_str(",\"type\":\"");
    body.push_str(event_type.as_str());
    body.push_str("\",\"object\":");
    body.push_str(object_json);
    body.push('}');
    EventBody(Arc::from(body))
}

/// One event's shared frame body (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody(pub(crate) Arc<str>);

impl EventBody {
    /// The body of the event that `line` is, when the line is `{"type":"<type>","object":<object>}`
    /// byte for byte (the API server's layout): the line with `,` for its first byte.
    pub fn after_first_byte(line: &str) -> EventBody {
        let rest = line.get(1..).unwrap_or_default();
        let mut body = String::with_capacity(1 + rest.len());
        body.push(',');
        body.push_str(rest);
        EventBody(Arc::from(body))
    }

    /// The body's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The frame of one subscriber: its head, then the shared body.
pub fn frame(head: &str, body: &str) -> String {
    let mut frame = String::with_capacity(head.len() + body.len());
    frame.push_str(head);
    frame.push_str(body);
    frame
}

#[cfg(test)]
mod tests {
    use kubemux_protocol::frames::{ServerMessage, encode_event_raw};

    use super::*;

    /// The shared frame of every subscriber equals what the codec writes for its id: one body,
    /// many ids, including ones JSON must escape.
    #[test]
    fn a_shared_body_makes_the_codecs_frame_for_every_id() {
        let object = r#"{"kind":"Pod","metadata":{"name":"web-1","namespace":"default","resourceVersion":"42"},"spec":{"note":"\"quoted\" \u00e9"}}"#;
        for event_type in [EventType::Added, EventType::Modified, EventType::Deleted] {
            let body = event_body(event_type, object);
            for id in ["pods", "a \"quoted\" id", "back\\slash", "ünïcode ✓", "tab\tnew\nline", ""] {
                let shared = frame(&event_head(id), body.as_str());
                assert_eq!(shared, encode_event_raw(id, event_type, object), "{id:?}");
                assert!(matches!(ServerMessage::decode(&shared), Ok(ServerMessage::Event { id: decoded, .. }) if decoded == id));
            }
            let line = format!(r#"{{"type":"{}","object":{object}}}"#, event_type.as_str());
            assert_eq!(EventBody::after_first_byte(&line), body, "an upstream line in the API server's layout is the body");
        }
    }
}
