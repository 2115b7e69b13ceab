//! The `kubemux.v1` frames of `docs/PROTOCOL.md` §2–3 and their codec.
//!
//! Every message is one JSON object with a string `op`. Decoding is in two steps so that a bad
//! frame can still be reported against its subscription: first the JSON object and its `op`
//! and `id`, then the op's own fields. A [`DecodeError`] therefore carries the `id` whenever
//! the message had one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The WebSocket subprotocol of this protocol.
pub const SUBPROTOCOL: &str = "kubemux.v1";

/// The same protocol with the server's frames compressed (`docs/PROTOCOL.md` §1.1): one raw
/// DEFLATE stream per connection, sent as binary messages. A client offers it before
/// [`SUBPROTOCOL`]; a server that does not speak it selects [`SUBPROTOCOL`].
pub const SUBPROTOCOL_DEFLATE: &str = "kubemux.v1+deflate";

/// The first byte of a `kubemux.v1+deflate` message whose data continues the current stream.
pub const DEFLATE_CONTINUE: u8 = 0;

/// The first byte of a `kubemux.v1+deflate` message whose data starts a new stream (the
/// previous one, if any, ended with its final block).
pub const DEFLATE_NEW_STREAM: u8 = 1;

/// What follows each frame in a `kubemux.v1+deflate` stream: the record separator (U+001E),
/// which JSON text cannot contain (a pretty-printed object may hold newlines).
pub const FRAME_SEPARATOR: u8 = 0x1e;

/// Longest subscription id.
pub const MAX_ID_LEN: usize = 128;

/// The selectors a subscription may carry; nothing else is allowed in `query`, and `query`
/// must be an object: serde's derived decoder would also take an array (`["app=web"]` as a
/// label selector), which the contract refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "serde_json::Map<String, Value>")]
pub struct WatchQuery {
    /// A Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// A Kubernetes field selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<String>,
}

impl TryFrom<serde_json::Map<String, Value>> for WatchQuery {
    type Error = String;

    fn try_from(map: serde_json::Map<String, Value>) -> Result<Self, String> {
        let mut query = WatchQuery::default();
        for (key, value) in map {
            let slot = match key.as_str() {
                "labelSelector" => &mut query.label_selector,
                "fieldSelector" => &mut query.field_selector,
                _ => return Err(format!("unknown field `{key}` in query, expected `labelSelector` or `fieldSelector`")),
            };
            *slot = match value {
                Value::Null => None,
                Value::String(selector) => Some(selector),
                _ => return Err(format!("query.{key} must be a string")),
            };
        }
        Ok(query)
    }
}

/// A `query` that is present must be an object; `Option`'s own decoder would read `null` as
/// absent.
fn present_query<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<WatchQuery>, D::Error> {
    WatchQuery::deserialize(deserializer).map(Some)
}

impl WatchQuery {
    /// Whether neither selector is set.
    pub fn is_empty(&self) -> bool {
        self.label_selector.is_none() && self.field_selector.is_none()
    }
}

/// `{"op":"watch",…}`: subscribe to a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    /// Client-chosen subscription id.
    pub id: String,
    /// Cluster name.
    pub cluster: String,
    /// Collection path, e.g. `/api/v1/namespaces/default/pods`.
    pub path: String,
    /// Optional selectors: absent, or an object (`null` is refused, like any other non-object).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_query")]
    pub query: Option<WatchQuery>,
    /// The version the client holds; absent means "send me a snapshot".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// How the client accepts being resumed (`docs/PROTOCOL.md` §2, §4); absent, or a value
    /// this version does not know, means by replay or `reset` only.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "known_resume_mode")]
    pub resume: Option<ResumeMode>,
    /// What the client wants of each object (`docs/PROTOCOL.md` §2); absent, or a value this
    /// version does not know, means the whole object, every change.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "known_projection")]
    pub projection: Option<ProjectionMode>,
    /// Whether the client applies `patch` frames (`docs/PROTOCOL.md` §2, §3): a `MODIFIED` it
    /// holds the previous version of may come as a merge patch against it. Absent or `false`:
    /// every change comes as a whole object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deltas: bool,
}

/// A projection a watch may ask for (`"projection"` of `watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionMode {
    /// `"default"`: objects without `metadata.managedFields` and the
    /// `kubectl.kubernetes.io/last-applied-configuration` annotation, and no `MODIFIED` whose
    /// object so projected changed in nothing but its `resourceVersion` (a `bookmark` carries the
    /// resume point instead, at most once a second).
    Default,
}

/// `projection` is a string; one this version does not know is ignored (whole objects), so a
/// later client still watches on an older server.
fn known_projection<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<ProjectionMode>, D::Error> {
    Ok(match Option::<String>::deserialize(deserializer)?.as_deref() {
        Some("default") => Some(ProjectionMode::Default),
        _ => None,
    })
}

/// What a resuming client accepts besides a replay and a `reset` (`"resume"` of `watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeMode {
    /// `"inventory"`: the client understands the `inventory` frame, so the server may answer a
    /// resume it holds no history for from its store: the objects changed since the client's
    /// version, in key order, then the keys it holds, then `synced` (§4).
    Inventory,
}

/// `resume` is a string; one this version does not know is ignored (read as absent), so a
/// later client degrades to replay-or-reset on an older server instead of failing its watch.
fn known_resume_mode<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<ResumeMode>, D::Error> {
    Ok(match Option::<String>::deserialize(deserializer)?.as_deref() {
        Some("inventory") => Some(ResumeMode::Inventory),
        _ => None,
    })
}

/// A message from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Subscribe.
    Watch(Watch),
    /// Unsubscribe; unknown ids are ignored.
    Unwatch {
        /// The subscription id.
        id: String,
    },
    /// Set or replace this connection's token for a cluster.
    Auth {
        /// Cluster name.
        cluster: String,
        /// Bearer token.
        token: String,
    },
    /// Application-level ping, answered with `pong` carrying the same data.
    Ping {
        /// Opaque data echoed back.
        #[serde(default)]
        data: Value,
    },
    /// Asks what this connection and its subscriptions cost (§2), answered with `stats`
    /// carrying the same data.
    Stats {
        /// Opaque data echoed back.
        #[serde(default)]
        data: Value,
    },
    /// The client cannot apply a `patch` (it does not hold the base version): answered with
    /// `reset`, a snapshot and `synced` (§2).
    Resync {
        /// The subscription id.
        id: String,
    },
}

/// A watch event type as carried in `event` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created, or newly matching.
    Added,
    /// Changed.
    Modified,
    /// Deleted, or no longer matching; the object is its last state.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A Kubernetes `Status` object as carried in `error` frames. Unknown fields are kept, so an
/// upstream Status passes through unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// HTTP-style code.
    #[serde(default)]
    pub code: u16,
    /// Machine-readable reason, e.g. `Forbidden`.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Everything else (`kind`, `apiVersion`, `status`, `details`, …).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Status {
    /// A `Failure` Status with the usual `kind`/`apiVersion`/`metadata`.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
        let mut rest = Map::new();
        rest.insert("kind".into(), Value::from("Status"));
        rest.insert("apiVersion".into(), Value::from("v1"));
        rest.insert("metadata".into(), Value::Object(Map::new()));
        rest.insert("status".into(), Value::from("Failure"));
        Status { code, reason: reason.to_owned(), message: message.into(), rest }
    }
}

/// A message from server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerMessage {
    /// A change to one object.
    Event {
        /// Subscription id.
        id: String,
        /// What happened.
        #[serde(rename = "type")]
        event_type: EventType,
        /// The object as the API server sent it.
        object: Value,
    },
    /// A `MODIFIED` as a merge patch (RFC 7386) against the version `base` of the object the
    /// client holds under `namespace`/`name`; applied, it is the object at `resourceVersion`
    /// (§3). Sent only to a subscription that asked for `deltas`.
    Patch {
        /// Subscription id.
        id: String,
        /// The `metadata.resourceVersion` of the object the patch applies to.
        base: String,
        /// The object's namespace; absent for a cluster-scoped object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// The object's name.
        name: String,
        /// The object's version once patched: the client's new resume point.
        #[serde(rename = "resourceVersion")]
        resource_version: String,
        /// The merge patch.
        patch: Value,
    },
    /// The snapshot or replay is complete; the view is consistent at `resourceVersion`.
    Synced {
        /// Subscription id.
        id: String,
        /// The version the view is consistent at.
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    },
    /// The keys the server holds at the version of the `synced` that follows, by namespace
    /// (`""` for cluster-scoped objects): the client drops every object it holds that is not
    /// listed. Sent only in answer to a `watch` with `"resume":"inventory"` (§3, §4).
    Inventory {
        /// Subscription id.
        id: String,
        /// Namespace → the names in it.
        keys: BTreeMap<String, Vec<String>>,
    },
    /// The server cannot continue from where the client is: a snapshot follows.
    Reset {
        /// Subscription id.
        id: String,
    },
    /// Nothing changed up to `resourceVersion`.
    Bookmark {
        /// Subscription id.
        id: String,
        /// The client's new resume point.
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    },
    /// Something went wrong for one subscription (or, with `id: null`, for a message that
    /// could not be tied to one).
    Error {
        /// Subscription id, or `None`.
        id: Option<String>,
        /// Whether the subscription has ended.
        fatal: bool,
        /// What went wrong.
        status: Status,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's data.
        #[serde(default)]
        data: Value,
    },
    /// Answer to `stats`: the connection's and each subscription's counters (§3), kept as the
    /// JSON they came in, which clients hand to the application as it is.
    Stats {
        /// The request's data.
        #[serde(default)]
        data: Value,
        /// The connection's counters.
        connection: Value,
        /// Each subscription's counters, by id.
        subscriptions: Value,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The message's `id`, when it had a string one: the error belongs to that subscription.
    pub id: Option<String>,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// What was wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// Not valid JSON.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("message is not a JSON object")]
    NotObject,
    /// No string `op` field.
    #[error("message has no string \"op\" field")]
    MissingOp,
    /// An `op` this protocol version does not have.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// The op is known but its fields are wrong.
    #[error("invalid {op} message: {message}")]
    InvalidFields {
        /// The op.
        op: String,
        /// What is wrong.
        message: String,
    },
}

/// A message's JSON object, its `id` (when a string) and its `op`, checked against `ops`.
fn decode_head(text: &str, ops: &[&str]) -> Result<Fields, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError { id: None, kind: DecodeErrorKind::NotJson(e.to_string()) })?;
    let Value::Object(map) = value else {
        return Err(DecodeError { id: None, kind: DecodeErrorKind::NotObject });
    };
    let id = map.get("id").and_then(Value::as_str).map(str::to_owned);
    let Some(op) = map.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return Err(DecodeError { id, kind: DecodeErrorKind::MissingOp });
    };
    if !ops.contains(&op.as_str()) {
        return Err(DecodeError { id, kind: DecodeErrorKind::UnknownOp(op) });
    }
    Ok(Fields { map, id, op })
}

fn decode_object<T: for<'de> Deserialize<'de>>(text: &str, ops: &[&str]) -> Result<T, DecodeError> {
    let Fields { map, id, op } = decode_head(text, ops)?;
    serde_json::from_value(Value::Object(map)).map_err(|e| DecodeError { id, kind: DecodeErrorKind::InvalidFields { op, message: e.to_string() } })
}

/// Takes the fields of a server message out of its object. Written out rather than derived:
/// this runs in every browser, and serde's derived visitors bring their type-error formatting
/// (and with it the standard library's float printing) into the WebAssembly package, several
/// KiB for nothing. The derived `Deserialize` stays the reference; the tests check both agree.
struct Fields {
    map: Map<String, Value>,
    id: Option<String>,
    op: String,
}

impl Fields {
    fn invalid(&self, message: String) -> DecodeError {
        DecodeError { id: self.id.clone(), kind: DecodeErrorKind::InvalidFields { op: self.op.clone(), message } }
    }

    fn string(&mut self, key: &str) -> Result<String, DecodeError> {
        match self.map.remove(key) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.invalid(format!("missing string field `{key}`"))),
        }
    }

    fn server_message(mut self) -> Result<ServerMessage, DecodeError> {
        Ok(match self.op.as_str() {
            "event" => {
                let id = self.string("id")?;
                let event_type = match self.string("type")?.as_str() {
                    "ADDED" => EventType::Added,
                    "MODIFIED" => EventType::Modified,
                    "DELETED" => EventType::Deleted,
                    other => return Err(self.invalid(format!("unknown event type `{other}`"))),
                };
                match self.map.remove("object") {
                    Some(object @ Value::Object(_)) => ServerMessage::Event { id, event_type, object },
                    _ => return Err(self.invalid("missing object field `object`".into())),
                }
            }
            "patch" => {
                let (id, base) = (self.string("id")?, self.string("base")?);
                let namespace = match self.map.remove("namespace") {
                    Some(Value::String(namespace)) => Some(namespace),
                    None => None,
                    Some(_) => return Err(self.invalid("`namespace` must be a string".into())),
                };
                let (name, resource_version) = (self.string("name")?, self.string("resourceVersion")?);
                match self.map.remove("patch") {
                    Some(patch @ Value::Object(_)) => ServerMessage::Patch { id, base, namespace, name, resource_version, patch },
                    _ => return Err(self.invalid("missing object field `patch`".into())),
                }
            }
            "synced" => ServerMessage::Synced { id: self.string("id")?, resource_version: self.string("resourceVersion")? },
            "bookmark" => ServerMessage::Bookmark { id: self.string("id")?, resource_version: self.string("resourceVersion")? },
            "reset" => ServerMessage::Reset { id: self.string("id")? },
            "inventory" => {
                let id = self.string("id")?;
                let Some(Value::Object(namespaces)) = self.map.remove("keys") else { return Err(self.invalid("missing object field `keys`".into())) };
                let mut keys = BTreeMap::new();
                for (namespace, names) in namespaces {
                    let Value::Array(names) = names else { return Err(self.invalid(format!("keys.{namespace:?} must be an array of names"))) };
                    let names: Option<Vec<String>> = names.into_iter().map(|name| if let Value::String(name) = name { Some(name) } else { None }).collect();
                    let Some(names) = names else { return Err(self.invalid(format!("keys.{namespace:?} must be an array of names"))) };
                    keys.insert(namespace, names);
                }
                ServerMessage::Inventory { id, keys }
            }
            "error" => {
                let id = match self.map.remove("id") {
                    Some(Value::String(id)) => Some(id),
                    None | Some(Value::Null) => None,
                    Some(_) => return Err(self.invalid("`id` must be a string or null".into())),
                };
                let Some(fatal) = self.map.get("fatal").and_then(Value::as_bool) else {
                    return Err(self.invalid("missing boolean field `fatal`".into()));
                };
                let Some(Value::Object(mut rest)) = self.map.remove("status") else {
                    return Err(self.invalid("missing object field `status`".into()));
                };
                let mut text = |key: &str| match rest.remove(key) {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                let (reason, message) = (text("reason"), text("message"));
                let code = rest.remove("code").and_then(|c| c.as_u64()).and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
                ServerMessage::Error { id, fatal, status: Status { code, reason, message, rest } }
            }
            "stats" => {
                let data = self.map.remove("data").unwrap_or(Value::Null);
                let (Some(connection @ Value::Object(_)), Some(subscriptions @ Value::Object(_))) = (self.map.remove("connection"), self.map.remove("subscriptions")) else {
                    return Err(self.invalid("missing object fields `connection` and `subscriptions`".into()));
                };
                ServerMessage::Stats { data, connection, subscriptions }
            }
            _ => ServerMessage::Pong { data: self.map.remove("data").unwrap_or(Value::Null) },
        })
    }
}

impl ClientMessage {
    /// Decodes a client message.
    pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
        decode_object(text, &["watch", "unwatch", "auth", "ping", "stats", "resync"])
    }

    /// Encodes a client message.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("client messages serialise")
    }
}

impl ServerMessage {
    /// Decodes a server message.
    pub fn decode(text: &str) -> Result<ServerMessage, DecodeError> {
        decode_head(text, &["event", "patch", "synced", "inventory", "reset", "bookmark", "error", "pong", "stats"])?.server_message()
    }

    /// Encodes a server message.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("server messages serialise")
    }
}

/// Encodes an `event` frame around an object that is already JSON text, so that one object
/// serialised once can be sent to many subscribers (each frame differs only in its id).
pub fn encode_event_raw(id: &str, event_type: EventType, object_json: &str) -> String {
    let id = serde_json::to_string(id).expect("strings serialise");
    let mut out = String::with_capacity(40 + id.len() + object_json.len());
    out.push_str("{\"op\":\"event\",\"id\":");
    out.push_str(&id);
    out.push_str(",\"type\":\"");
    out.push_str(event_type.as_str());
    out.push_str("\",\"object\":");
    out.push_str(object_json);
    out.push('}');
    out
}

/// Encodes an `inventory` frame from keys in `(namespace, name)` order, as a store sorted by key
/// yields them, without building the map [`ServerMessage::Inventory`] holds: for 10,000 objects
/// the frame is about the length of their names, written once.
pub fn encode_inventory_raw<'a>(id: &str, keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let quoted = |text: &str| serde_json::to_string(text).expect("strings serialise");
    let mut out = String::from("{\"op\":\"inventory\",\"id\":");
    out.push_str(&quoted(id));
    out.push_str(",\"keys\":{");
    let mut namespace: Option<&str> = None;
    for (ns, name) in keys {
        match namespace {
            Some(current) if current == ns => out.push(','),
            Some(_) => {
                out.push_str("],");
                namespace = None;
            }
            None => {}
        }
        if namespace.is_none() {
            out.push_str(&quoted(ns));
            out.push_str(":[");
            namespace = Some(ns);
        }
        out.push_str(&quoted(name));
    }
    if namespace.is_some() {
        out.push(']');
    }
    out.push_str("}}");
    out
}

/// Why a `watch` request is not acceptable (all fatal `BadRequest` for its id, except where
/// the caller decides otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchRequestError {
    /// The id is empty or longer than [`MAX_ID_LEN`].
    #[error("id must be 1 to {MAX_ID_LEN} characters")]
    BadId,
    /// The path is not a collection path.
    #[error("invalid path {0:?}: expected /api/v1[/namespaces/NS]/RESOURCE or /apis/GROUP/VERSION[/namespaces/NS]/RESOURCE")]
    BadPath(String),
    /// An empty cluster name.
    #[error("cluster must not be empty")]
    BadCluster,
}

fn dns_label(segment: &str, allow_dots: bool) -> bool {
    !segment.is_empty()
        && segment.len() <= 253
        && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (allow_dots && b == b'.'))
        && segment.as_bytes()[0].is_ascii_alphanumeric()
        && segment.as_bytes()[segment.len() - 1].is_ascii_alphanumeric()
}

/// Checks a collection path: `/api/v1[/namespaces/{ns}]/{resource}` or
/// `/apis/{group}/{version}[/namespaces/{ns}]/{resource}`, DNS-1123 segments (dots allowed in
/// the group), no `..`, no percent-encoding, no query string.
pub fn validate_collection_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let segments: Vec<&str> = rest.split('/').collect();
    let tail = match segments.as_slice() {
        ["api", "v1", tail @ ..] => tail,
        ["apis", group, version, tail @ ..] if dns_label(group, true) && dns_label(version, false) => tail,
        _ => return false,
    };
    match tail {
        [resource] => dns_label(resource, false),
        ["namespaces", ns, resource] => dns_label(ns, false) && dns_label(resource, false),
        _ => false,
    }
}

impl Watch {
    /// Checks the id, cluster and path.
    pub fn validate(&self) -> Result<(), WatchRequestError> {
        if self.id.is_empty() || self.id.chars().count() > MAX_ID_LEN {
            return Err(WatchRequestError::BadId);
        }
        if self.cluster.is_empty() {
            return Err(WatchRequestError::BadCluster);
        }
        if !validate_collection_path(&self.path) {
            return Err(WatchRequestError::BadPath(self.path.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Golden frames: each decodes to the given message and encodes back to the same JSON.
    fn check_client(text: &str, expected: ClientMessage) {
        assert_eq!(ClientMessage::decode(text).unwrap(), expected, "{text}");
        let back: Value = serde_json::from_str(&expected.encode()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap(), "{text}");
    }

    fn check_server(text: &str, expected: ServerMessage) {
        assert_eq!(ServerMessage::decode(text).unwrap(), expected, "{text}");
        assert_eq!(serde_json::from_str::<ServerMessage>(text).unwrap(), expected, "the derived decoder agrees: {text}");
        let back: Value = serde_json::from_str(&expected.encode()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap(), "{text}");
    }

    #[test]
    fn client_frames() {
        check_client(
            r#"{"op":"watch","id":"pods","cluster":"prod","path":"/api/v1/namespaces/default/pods","query":{"labelSelector":"app=web"},"resourceVersion":"1042"}"#,
            ClientMessage::Watch(Watch {
                id: "pods".into(),
                cluster: "prod".into(),
                path: "/api/v1/namespaces/default/pods".into(),
                query: Some(WatchQuery { label_selector: Some("app=web".into()), field_selector: None }),
                resource_version: Some("1042".into()),
                resume: None,
                projection: None,
                deltas: false,
            }),
        );
        check_client(
            r#"{"op":"watch","id":"pods","cluster":"prod","path":"/api/v1/pods","resourceVersion":"1042","resume":"inventory"}"#,
            ClientMessage::Watch(Watch {
                id: "pods".into(),
                cluster: "prod".into(),
                path: "/api/v1/pods".into(),
                query: None,
                resource_version: Some("1042".into()),
                resume: Some(ResumeMode::Inventory),
                projection: None,
                deltas: false,
            }),
        );
        check_client(
            r#"{"op":"watch","id":"n","cluster":"c","path":"/api/v1/nodes"}"#,
            ClientMessage::Watch(Watch { id: "n".into(), cluster: "c".into(), path: "/api/v1/nodes".into(), query: None, resource_version: None, resume: None, projection: None, deltas: false }),
        );
        check_client(
            r#"{"op":"watch","id":"n","cluster":"c","path":"/api/v1/pods","projection":"default","deltas":true}"#,
            ClientMessage::Watch(Watch {
                id: "n".into(),
                cluster: "c".into(),
                path: "/api/v1/pods".into(),
                query: None,
                resource_version: None,
                resume: None,
                projection: Some(ProjectionMode::Default),
                deltas: true,
            }),
        );
        check_client(r#"{"op":"resync","id":"pods"}"#, ClientMessage::Resync { id: "pods".into() });
        check_client(r#"{"op":"unwatch","id":"pods"}"#, ClientMessage::Unwatch { id: "pods".into() });
        check_client(r#"{"op":"auth","cluster":"prod","token":"t"}"#, ClientMessage::Auth { cluster: "prod".into(), token: "t".into() });
        check_client(r#"{"op":"ping","data":"17"}"#, ClientMessage::Ping { data: json!("17") });
        check_client(r#"{"op":"stats","data":1}"#, ClientMessage::Stats { data: json!(1) });
        assert_eq!(ClientMessage::decode(r#"{"op":"stats"}"#).unwrap(), ClientMessage::Stats { data: Value::Null });
    }

    #[test]
    fn server_frames() {
        check_server(
            r#"{"op":"event","id":"pods","type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","resourceVersion":"1051"}}}"#,
            ServerMessage::Event { id: "pods".into(), event_type: EventType::Modified, object: json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","resourceVersion":"1051"}}) },
        );
        check_server(
            r#"{"op":"patch","id":"pods","base":"1051","namespace":"default","name":"web-1","resourceVersion":"1060","patch":{"metadata":{"resourceVersion":"1060"},"status":{"phase":"Running"}}}"#,
            ServerMessage::Patch {
                id: "pods".into(),
                base: "1051".into(),
                namespace: Some("default".into()),
                name: "web-1".into(),
                resource_version: "1060".into(),
                patch: json!({"metadata":{"resourceVersion":"1060"},"status":{"phase":"Running"}}),
            },
        );
        check_server(
            r#"{"op":"patch","id":"nodes","base":"7","name":"node-a","resourceVersion":"9","patch":{"metadata":{"labels":{"gone":null}}}}"#,
            ServerMessage::Patch { id: "nodes".into(), base: "7".into(), namespace: None, name: "node-a".into(), resource_version: "9".into(), patch: json!({"metadata":{"labels":{"gone":null}}}) },
        );
        check_server(r#"{"op":"synced","id":"pods","resourceVersion":"1050"}"#, ServerMessage::Synced { id: "pods".into(), resource_version: "1050".into() });
        check_server(r#"{"op":"reset","id":"pods"}"#, ServerMessage::Reset { id: "pods".into() });
        check_server(
            r#"{"op":"inventory","id":"pods","keys":{"":["node-1"],"demo":["web-1","web-2"]}}"#,
            ServerMessage::Inventory { id: "pods".into(), keys: BTreeMap::from([("".into(), vec!["node-1".into()]), ("demo".into(), vec!["web-1".into(), "web-2".into()])]) },
        );
        check_server(r#"{"op":"inventory","id":"pods","keys":{}}"#, ServerMessage::Inventory { id: "pods".into(), keys: BTreeMap::new() });
        check_server(r#"{"op":"bookmark","id":"pods","resourceVersion":"1099"}"#, ServerMessage::Bookmark { id: "pods".into(), resource_version: "1099".into() });
        let mut status = Status::failure(503, "ServiceUnavailable", "cluster prod unreachable: connection refused");
        status.rest.remove("metadata");
        check_server(
            r#"{"op":"error","id":"pods","fatal":false,"status":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"cluster prod unreachable: connection refused","reason":"ServiceUnavailable","code":503}}"#,
            ServerMessage::Error { id: Some("pods".into()), fatal: false, status },
        );
        check_server(r#"{"op":"pong","data":"17"}"#, ServerMessage::Pong { data: json!("17") });
        let stats = r#"{"op":"stats","data":1,"connection":{"framesIn":2,"bytesIn":120,"framesOut":5,"bytesOut":2400,"queuedBytes":0,"overflows":0},"subscriptions":{"pods":{"events":3,"bytes":2200,"resets":0,"hidden":0,"upstream":{"subscribers":2,"requests":2,"events":3,"bytes":2100,"resets":0}}}}"#;
        let frame = serde_json::from_str::<Value>(stats).unwrap();
        check_server(stats, ServerMessage::Stats { data: json!(1), connection: frame["connection"].clone(), subscriptions: frame["subscriptions"].clone() });
    }

    #[test]
    fn raw_event_encoding_matches_the_typed_one() {
        let object = json!({"metadata": {"name": "a\"b", "resourceVersion": "7"}});
        let raw = encode_event_raw("pods \"x\"", EventType::Added, &object.to_string());
        let typed = ServerMessage::Event { id: "pods \"x\"".into(), event_type: EventType::Added, object };
        assert_eq!(ServerMessage::decode(&raw).unwrap(), typed);
    }

    #[test]
    fn raw_inventory_encoding_matches_the_typed_one() {
        let keys = [("", "node-1"), ("demo", "web-\"1"), ("demo", "web-2"), ("kube-system", "dns")];
        let raw = encode_inventory_raw("pods \"x\"", keys);
        let typed = ServerMessage::Inventory {
            id: "pods \"x\"".into(),
            keys: BTreeMap::from([("".into(), vec!["node-1".into()]), ("demo".into(), vec!["web-\"1".into(), "web-2".into()]), ("kube-system".into(), vec!["dns".into()])]),
        };
        assert_eq!(ServerMessage::decode(&raw).unwrap(), typed, "{raw}");
        assert_eq!(ServerMessage::decode(&encode_inventory_raw("p", [])).unwrap(), ServerMessage::Inventory { id: "p".into(), keys: BTreeMap::new() });
    }

    /// `resume` is optional and forward-compatible: a value this version does not know is read
    /// as absent (the server answers as to a client without it); a value that is not a string
    /// is a malformed watch, with its id.
    #[test]
    fn resume_modes_this_version_does_not_know_are_ignored() {
        let watch = |resume: &str| ClientMessage::decode(&format!(r#"{{"op":"watch","id":"w","cluster":"c","path":"/api/v1/pods","resourceVersion":"5","resume":{resume}}}"#));
        let mode = |resume: &str| match watch(resume) {
            Ok(ClientMessage::Watch(watch)) => watch.resume,
            other => panic!("{resume}: {other:?}"),
        };
        assert_eq!(mode(r#""inventory""#), Some(ResumeMode::Inventory));
        assert_eq!(mode(r#""digest-v2""#), None);
        assert_eq!(mode("null"), None);
        for bad in ["5", "true", r#"["inventory"]"#] {
            let error = watch(bad).unwrap_err();
            assert_eq!(error.id.as_deref(), Some("w"), "{bad}");
            assert!(matches!(error.kind, DecodeErrorKind::InvalidFields { .. }), "{bad}: {error:?}");
        }
    }

    /// `projection` is optional and forward-compatible, like `resume`.
    #[test]
    fn projections_this_version_does_not_know_are_ignored() {
        let watch = |projection: &str| ClientMessage::decode(&format!(r#"{{"op":"watch","id":"w","cluster":"c","path":"/api/v1/pods","projection":{projection}}}"#));
        let mode = |projection: &str| match watch(projection) {
            Ok(ClientMessage::Watch(watch)) => watch.projection,
            other => panic!("{projection}: {other:?}"),
        };
        assert_eq!(mode(r#""default""#), Some(ProjectionMode::Default));
        assert_eq!(mode(r#""fields-v2""#), None);
        assert_eq!(mode("null"), None);
        for bad in ["1", r#"["default"]"#] {
            let error = watch(bad).unwrap_err();
            assert_eq!(error.id.as_deref(), Some("w"), "{bad}");
        }
    }

    #[test]
    fn decode_errors_keep_the_id() {
        let err = |text: &str| ClientMessage::decode(text).unwrap_err();
        assert!(matches!(err("{nope").kind, DecodeErrorKind::NotJson(_)));
        assert_eq!(err("[1]").kind, DecodeErrorKind::NotObject);
        assert_eq!(err(r#"{"id":"a"}"#), DecodeError { id: Some("a".into()), kind: DecodeErrorKind::MissingOp });
        assert_eq!(err(r#"{"op":"subscribe","id":"a"}"#).kind, DecodeErrorKind::UnknownOp("subscribe".into()));
        let bad_query = err(r#"{"op":"watch","id":"q","cluster":"c","path":"/api/v1/pods","query":{"limit":"5"}}"#);
        assert_eq!(bad_query.id.as_deref(), Some("q"));
        assert!(matches!(bad_query.kind, DecodeErrorKind::InvalidFields { .. }));
        // `query` is an object or absent: arrays, strings and numbers are refused, with the id.
        for query in ["null", "[]", r#"["app=web"]"#, r#""app=web""#, "5", r#"{"labelSelector":5}"#] {
            let bad = err(&format!(r#"{{"op":"watch","id":"q","cluster":"c","path":"/api/v1/pods","query":{query}}}"#));
            assert_eq!(bad.id.as_deref(), Some("q"), "{query}");
            assert!(matches!(bad.kind, DecodeErrorKind::InvalidFields { .. }), "{query}: {bad:?}");
        }
        assert_eq!(err(r#"{"op":"watch","id":"q"}"#).id.as_deref(), Some("q"));

        let server = |text: &str| ServerMessage::decode(text).unwrap_err();
        for bad in [
            r#"{"op":"event","id":"p","type":"GONE","object":{}}"#,
            r#"{"op":"event","id":"p","type":"ADDED"}"#,
            r#"{"op":"synced","id":"p"}"#,
            r#"{"op":"error","id":"p","status":{"code":500}}"#,
            r#"{"op":"error","id":"p","fatal":true,"status":"boom"}"#,
            r#"{"op":"inventory","id":"p"}"#,
            r#"{"op":"inventory","id":"p","keys":["a"]}"#,
            r#"{"op":"inventory","id":"p","keys":{"ns":"a"}}"#,
            r#"{"op":"inventory","id":"p","keys":{"ns":["a",5]}}"#,
            r#"{"op":"stats","id":"p","data":1,"connection":{}}"#,
        ] {
            let error = server(bad);
            assert_eq!(error.id.as_deref(), Some("p"), "{bad}");
            assert!(matches!(error.kind, DecodeErrorKind::InvalidFields { .. }), "{bad}: {error:?}");
            assert!(serde_json::from_str::<ServerMessage>(bad).is_err(), "the derived decoder refuses it too: {bad}");
        }
        assert_eq!(server(r#"{"op":"hello"}"#).kind, DecodeErrorKind::UnknownOp("hello".into()));
    }

    #[test]
    fn collection_paths() {
        for ok in ["/api/v1/pods", "/api/v1/namespaces/default/pods", "/apis/apps/v1/deployments", "/apis/networking.k8s.io/v1/namespaces/a-b/ingresses"] {
            assert!(validate_collection_path(ok), "{ok}");
        }
        for bad in [
            "",
            "api/v1/pods",
            "/api/v1",
            "/api/v1/namespaces/default/pods/web-1",
            "/api/v1/../pods",
            "/api/v1/po%64s",
            "/api/v1/pods?watch=1",
            "/api/v2/pods",
            "/apis/apps/v1/namespaces/Default/pods",
            "/api/v1/pods/",
        ] {
            assert!(!validate_collection_path(bad), "{bad}");
        }
        let mut w = Watch { id: "x".repeat(129), cluster: "c".into(), path: "/api/v1/pods".into(), query: None, resource_version: None, resume: None, projection: None, deltas: false };
        assert_eq!(w.validate(), Err(WatchRequestError::BadId));
        w.id = "ok".into();
        assert_eq!(w.validate(), Ok(()));
    }
}
