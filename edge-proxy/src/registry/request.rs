//! What an upstream watch asks the API server and reads back: list pages, the shared watch and
//! catch-up watches, all built here; and one line of a watch stream.
//!
//! Building a request can fail: a selector can be legal and still too long for a URI once it is
//! URL-encoded (the `http` crate refuses more than 65,534 bytes, and kube puts the cluster URL's
//! own path in front). That is the client's request at fault, so the subscription ends with a
//! Status saying so, never with a panic.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kubemux_protocol::frames::{EventType, Status};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::WatchKey;
use super::cache::{ObjectJson, ObjectKey, Stored};

/// The longest path and query the `http` crate accepts in a URI (`u16::MAX - 1`, its `MAX_LEN`).
pub(crate) const MAX_URI_BYTES: usize = 65_534;

/// The length of the URI kube builds for `path_and_query` on the cluster at `cluster_url`: kube
/// joins the cluster URL's own path in front (and panics if the result does not fit).
pub(crate) fn joined_length(cluster_url: &str, path_and_query: &str) -> usize {
    base_path_length(cluster_url).saturating_add(path_and_query.len())
}

fn base_path_length(cluster_url: &str) -> usize {
    cluster_url.parse::<http::Uri>().map(|uri| uri.path().trim_end_matches('/').len()).unwrap_or(0)
}

/// Why an upstream request could not be built.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// The path and query would not fit in a URI.
    #[error("the request to the cluster for {path} would be {length} bytes long with its URL-encoded query, over the limit of {limit} bytes; shorten the label or field selector")]
    TooLong {
        /// The collection path.
        path: String,
        /// The path and query's length, with the cluster URL's path.
        length: usize,
        /// The most a request may be.
        limit: usize,
    },
    /// `http` refused the request for another reason.
    #[error("cannot build the request to the cluster for {path}: {source}")]
    Invalid {
        /// The collection path.
        path: String,
        /// What `http` said.
        #[source]
        source: http::Error,
    },
}

impl RequestError {
    /// The fatal Status a subscription gets: its request cannot be sent as it is.
    pub(super) fn status(&self) -> Status {
        match self {
            RequestError::TooLong { .. } => Status::failure(414, "RequestURITooLong", self.to_string()),
            RequestError::Invalid { .. } => Status::failure(400, "BadRequest", self.to_string()),
        }
    }
}

/// The requests of one watch key against one cluster.
#[derive(Debug, Clone)]
pub(super) struct Requests {
    path: String,
    selectors: Vec<(&'static str, String)>,
    /// The length of the cluster URL's path, which kube joins in front of every request's.
    base_path: usize,
}

impl Requests {
    /// The requests for `key` on the cluster at `cluster_url`.
    pub(super) fn new(key: &WatchKey, cluster_url: &str) -> Requests {
        let base_path = base_path_length(cluster_url);
        let selectors =
            [("labelSelector", &key.query.label_selector), ("fieldSelector", &key.query.field_selector)].into_iter().filter_map(|(name, value)| value.clone().map(|value| (name, value))).collect();
        Requests { path: key.path.clone(), selectors, base_path }
    }

    /// One page of the list: `limit` objects from `continue_token`.
    pub(super) fn list_page(&self, limit: u32, continue_token: Option<&str>) -> Result<http::Request<Vec<u8>>, RequestError> {
        let limit = limit.to_string();
        let mut extra = vec![("limit", limit.as_str())];
        if let Some(token) = continue_token {
            extra.push(("continue", token));
        }
        self.get(&extra, false)
    }

    /// A watch with bookmarks from `resource_version`, ending after `timeout` if one is given.
    pub(super) fn watch(&self, resource_version: &str, timeout: Option<Duration>) -> Result<http::Request<Vec<u8>>, RequestError> {
        let timeout = timeout.map(|t| t.as_secs().to_string());
        let mut extra = vec![("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", resource_version)];
        if let Some(timeout) = &timeout {
            extra.push(("timeoutSeconds", timeout));
        }
        // Watch streams must not be compressed (kube's decompression handles one gzip member).
        self.get(&extra, true)
    }

    fn get(&self, extra: &[(&str, &str)], identity_encoding: bool) -> Result<http::Request<Vec<u8>>, RequestError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.selectors {
            query.append_pair(name, value);
        }
        for (name, value) in extra {
            query.append_pair(name, value);
        }
        let uri = format!("{}?{}", self.path, query.finish());
        let length = uri.len().saturating_add(self.base_path);
        if length > MAX_URI_BYTES {
            return Err(RequestError::TooLong { path: self.path.clone(), length, limit: MAX_URI_BYTES });
        }
        let mut request = http::Request::get(uri);
        if identity_encoding {
            request = request.header(http::header::ACCEPT_ENCODING, "identity");
        }
        request.body(Vec::new()).map_err(|source| RequestError::Invalid { path: self.path.clone(), source })
    }
}

/// One line of a watch stream: its type, and the object left unparsed (the general layout,
/// read when a line is not in the API server's own, [`parse_line`]).
#[derive(Deserialize)]
struct WatchLine<'a> {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    #[serde(rename = "type")]
    kind: &'a str,
    /// The object (a Status for `ERROR`).
    #[serde(borrow)]
    object: &'a RawValue,
}

/// A watch line as the API server writes it, `{"type":…,"object":…}` and nothing else, read
/// in one pass: the object's metadata is picked out and everything else skipped unparsed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    object: ObjectHead<'a>,
}

/// What the proxy reads of an object: its metadata.
#[derive(Deserialize, Default)]
struct ObjectHead<'a> {
    #[serde(default, borrow)]
    metadata: Meta<'a>,
}

/// The object's key and version, borrowed from the line.
#[derive(Deserialize, Default, Debug, PartialEq, Eq)]
pub(super) struct Meta<'a> {
    #[serde(default, borrow)]
    pub(super) name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(super) namespace: Option<Text<'a>>,
    #[serde(default, borrow, rename = "resourceVersion")]
    pub(super) resource_version: Option<Text<'a>>,
}

/// A JSON string, borrowed from the line unless it holds escapes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// One watch line, read once: its type, the object's metadata, and the object's text as it
/// came (a slice of the line, never re-serialised).
#[derive(Debug)]
pub(super) struct ParsedLine<'a> {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub(super) kind: &'a str,
    /// The object's JSON text (a Status for `ERROR`).
    pub(super) object: &'a str,
    /// Its name, namespace and version; empty when its metadata is missing or not an object.
    pub(super) meta: Meta<'a>,
    /// Whether the line is `{"type":"<kind>","object":<object>}` byte for byte, so that
    /// `","` followed by the line without its first byte is an event frame's body.
    pub(super) server_layout: bool,
}

/// An object's `metadata.resourceVersion`, read from its text.
pub(super) fn resource_version_of(object: &str) -> Option<String> {
    Some(serde_json::from_str::<ObjectHead<'_>>(object).ok()?.metadata.resource_version?.0.into_owned())
}

/// Reads a watch line in one pass when it is in the API server's layout (every line a
/// Kubernetes API server writes), and otherwise (other whitespace or key order, more keys) in
/// two: the object's extent, then its metadata. `None` if it is not a watch line.
pub(super) fn parse_line(line: &str) -> Option<ParsedLine<'_>> {
    if let Ok(ServerLine { kind, object: ObjectHead { metadata } }) = serde_json::from_str::<ServerLine<'_>>(line) {
        // The keys are exactly `type` then `object` (no other key is accepted, none twice), so
        // with no whitespace before the object or after it, the object is what lies between
        // (`"object": {` with a space is another layout, read below).
        let object = line
            .strip_prefix("{\"type\":\"")
            .and_then(|rest| rest.strip_prefix(kind))
            .and_then(|rest| rest.strip_prefix("\",\"object\":"))
            .filter(|object| object.starts_with('{') && line.ends_with("}}"));
        if let Some(object) = object.and_then(|object| object.strip_suffix('}')) {
            return Some(ParsedLine { kind, object, meta: metadata, server_layout: true });
        }
    }
    let WatchLine { kind, object } = serde_json::from_str(line).ok()?;
    let object = object.get();
    let meta = serde_json::from_str::<ObjectHead<'_>>(object).map(|head| head.metadata).unwrap_or_default();
    Some(ParsedLine { kind, object, meta, server_layout: false })
}

/// One page of a list, read without building its items: each item is its own text as the
/// API server sent it, with `kind` and `apiVersion` spliced in when it lacks them.
#[derive(Debug)]
pub(super) struct ListPage {
    /// Each item's key, and its text with its version.
    pub(super) objects: Vec<(ObjectKey, Stored)>,
    /// The continue token, if more pages follow.
    pub(super) continue_token: Option<String>,
    /// The list's `metadata.resourceVersion` (what the last page says is the list's).
    pub(super) resource_version: Option<String>,
}

/// A list page's own fields, its items left as text.
#[derive(Deserialize)]
struct RawListPage<'a> {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    kind: Option<Text<'a>>,
    #[serde(default, borrow, rename = "apiVersion")]
    api_version: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// What the proxy reads of a list item: whether it has `kind` and `apiVersion`, and its key
/// and version; everything else is skipped unparsed.
#[derive(Deserialize)]
struct ItemHead<'a> {
    #[serde(default)]
    kind: Present,
    #[serde(default, rename = "apiVersion")]
    api_version: Present,
    #[serde(default, borrow)]
    metadata: Meta<'a>,
}

/// Whether a key is there, whatever its value.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

/// Reads one list page. Items get the `kind` (the list's without `List`) and `apiVersion` that
/// built-in lists leave out, so snapshot objects look like watch objects; nothing else of an
/// item is touched. An item that is not an object makes the page unreadable.
pub(super) fn parse_list_page(text: &str) -> Result<ListPage, serde_json::Error> {
    let page: RawListPage<'_> = serde_json::from_str(text)?;
    let item_kind = page.kind.as_deref().and_then(|kind| kind.strip_suffix("List"));
    let api_version = page.api_version.as_deref();
    let items = page.items.unwrap_or_default();
    let mut objects = Vec::with_capacity(items.len());
    for item in items {
        let raw = item.get();
        if !raw.starts_with('{') {
            return Err(serde::de::Error::custom("a list item is not an object"));
        }
        let head: ItemHead<'_> = serde_json::from_str(raw)?;
        let json = with_type(raw, item_kind.filter(|_| !head.kind.0), api_version.filter(|_| !head.api_version.0));
        let name = head.metadata.name.map(|name| name.0.into_owned()).unwrap_or_default();
        let namespace = head.metadata.namespace.map(|namespace| namespace.0.into_owned()).unwrap_or_default();
        objects.push(((namespace, name), Stored::new(json, head.metadata.resource_version.as_deref())));
    }
    let ListMeta { resource_version, continue_token } = page.metadata;
    Ok(ListPage { objects, continue_token: continue_token.filter(|token| !token.is_empty()), resource_version })
}

/// `object` (JSON text starting with `{`) with `"kind"` and `"apiVersion"` put first, the
/// rest of its bytes as they came.
fn with_type(object: &str, kind: Option<&str>, api_version: Option<&str>) -> ObjectJson {
    if kind.is_none() && api_version.is_none() {
        return Arc::from(object);
    }
    let rest = &object[1..];
    let mut json = String::with_capacity(object.len() + 64);
    json.push('{');
    for (key, value) in [("kind", kind), ("apiVersion", api_version)] {
        if let Some(value) = value {
            if json.len() > 1 {
                json.push(',');
            }
            json.push('"');
            json.push_str(key);
            json.push_str("\":");
            // A string always serialises.
            json.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned()));
        }
    }
    if !rest.trim_start().starts_with('}') {
        json.push(',');
    }
    json.push_str(rest);
    Arc::from(json)
}

/// The event type of a watch line's `type`, for changes (not BOOKMARK or ERROR).
pub(super) fn parse_event_type(kind: &str) -> Option<EventType> {
    match kind {
        "ADDED" => Some(EventType::Added),
        "MODIFIED" => Some(EventType::Modified),
        "DELETED" => Some(EventType::Deleted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use kubemux_protocol::frames::WatchQuery;

    use super::*;
    use crate::identity::Identity;

    fn requests(label_selector: &str, cluster_url: &str) -> Requests {
        let query = WatchQuery { label_selector: Some(label_selector.to_owned()), field_selector: None };
        let key = WatchKey { cluster: "c".into(), path: "/api/v1/pods".into(), query, identity: Identity::Proxy };
        Requests::new(&key, cluster_url)
    }

    #[test]
    fn only_the_api_servers_own_layout_is_taken_as_it_is() {
        let tight = r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"7"}}}"#;
        let parsed = parse_line(tight).expect("a watch line");
        assert!(parsed.server_layout);
        assert_eq!(parsed.object, r#"{"metadata":{"name":"a","namespace":"n","resourceVersion":"7"}}"#);
        // A space after the colon: still a watch line, with the same object and metadata, but
        // not in the server's layout (the object is not the text between the fixed parts).
        let spaced = r#"{"type":"ADDED","object": {"metadata":{"name":"a","namespace":"n","resourceVersion":"7"}}}"#;
        let parsed = parse_line(spaced).expect("a watch line");
        assert!(!parsed.server_layout);
        assert_eq!(parsed.object, r#"{"metadata":{"name":"a","namespace":"n","resourceVersion":"7"}}"#);
        assert_eq!((parsed.kind, parsed.meta.name.as_deref(), parsed.meta.resource_version.as_deref()), ("ADDED", Some("a"), Some("7")));
    }

    #[test]
    fn the_limit_is_the_http_crates() {
        let at_limit = format!("/{}", "a".repeat(MAX_URI_BYTES - 1));
        assert!(http::Request::get(at_limit.as_str()).body(()).is_ok());
        assert!(http::Request::get(format!("{at_limit}a")).body(()).is_err());
    }

    #[test]
    fn a_selector_too_long_for_a_uri_is_refused_with_its_length_and_the_limit() {
        // Legal, and 40,000 bytes; URL-encoded ('=' and ',' take three bytes each) it is twice
        // that.
        let selector = vec!["a=b"; 10_000].join(",");
        let error = requests(&selector, "https://example.com").watch("5", None).unwrap_err();
        let status = error.status();
        assert_eq!((status.code, status.reason.as_str()), (414, "RequestURITooLong"));
        assert!(status.message.contains("65534") && status.message.contains("/api/v1/pods"), "{}", status.message);
        let RequestError::TooLong { length, .. } = error else { panic!("{error}") };
        assert!(status.message.contains(&length.to_string()));
    }

    #[test]
    fn the_cluster_urls_own_path_counts() {
        // kube joins the cluster URL's path in front: the request must still fit then.
        let selector = "a".repeat(MAX_URI_BYTES - 100);
        assert!(requests(&selector, "https://example.com").list_page(500, None).is_ok());
        let long_base = format!("https://example.com/k8s/clusters/{}", "c".repeat(100));
        assert!(matches!(requests(&selector, &long_base).list_page(500, None), Err(RequestError::TooLong { .. })));
    }

    /// A line in the API server's layout is read in one pass and its object is the line's own
    /// text; any other layout of the same event reads the same.
    #[test]
    fn a_watch_line_is_read_once_with_its_object_as_it_came() {
        let object = r#"{"kind":"Pod","metadata":{"name":"web","namespace":"prod","resourceVersion":"42","labels":{"a":"b"}},"status":{"phase":"Running"}}"#;
        let line = format!(r#"{{"type":"MODIFIED","object":{object}}}"#);
        let parsed = parse_line(&line).unwrap();
        assert_eq!((parsed.kind, parsed.object, parsed.server_layout), ("MODIFIED", object, true));
        assert!(matches!(parsed.meta.name.as_ref().map(|t| &t.0), Some(Cow::Borrowed("web"))), "borrowed from the line: {:?}", parsed.meta);
        assert_eq!((parsed.meta.namespace.as_deref(), parsed.meta.resource_version.as_deref()), (Some("prod"), Some("42")));
        for other in
            [format!(r#"{{ "type": "MODIFIED", "object": {object} }}"#), format!(r#"{{"object":{object},"type":"MODIFIED"}}"#), format!(r#"{{"type":"MODIFIED","object":{object},"extra":{{}}}}"#)]
        {
            let parsed = parse_line(&other).unwrap();
            assert_eq!((parsed.kind, parsed.object, parsed.server_layout), ("MODIFIED", object, false), "{other}");
            assert_eq!((parsed.meta.name.as_deref(), parsed.meta.resource_version.as_deref()), (Some("web"), Some("42")));
        }
        let escaped = parse_line(r#"{"type":"ADDED","object":{"metadata":{"name":"w\u0065b","resourceVersion":"7"}}}"#).unwrap();
        assert_eq!(escaped.meta.name.as_deref(), Some("web"));
        let no_meta = parse_line(r#"{"type":"ADDED","object":{"metadata":"odd"}}"#).unwrap();
        assert_eq!((no_meta.meta, no_meta.object), (Meta::default(), r#"{"metadata":"odd"}"#));
        for broken in ["", "{", r#"{"type":"ADDED"}"#, r#"{"type":5,"object":{}}"#, "[]"] {
            assert!(parse_line(broken).is_none(), "{broken:?}");
        }
    }

    /// List items keep their text as the API server sent it, with `kind` and `apiVersion` put
    /// in front when they lack them; what they have is left as it is.
    #[test]
    fn list_items_get_kind_and_api_version_spliced_into_their_own_text() {
        let text = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"t"},"items":[
            {"metadata":{"name":"w\u0065b","namespace":"prod","resourceVersion":"7"},"spec":{"n": 1.50}},
            {"kind":"Pod","metadata":{"name":"b"}},
            { },
            {"apiVersion":"v2","kind":"Odd"}]}"#;
        let page = parse_list_page(text).unwrap();
        let json: Vec<&str> = page.objects.iter().map(|(_, stored)| &**stored.json()).collect();
        assert_eq!(
            json,
            [
                r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"w\u0065b","namespace":"prod","resourceVersion":"7"},"spec":{"n": 1.50}}"#,
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"}}"#,
                r#"{"kind":"Pod","apiVersion":"v1" }"#,
                r#"{"apiVersion":"v2","kind":"Odd"}"#,
            ]
        );
        for object in &json {
            serde_json::from_str::<serde_json::Value>(object).unwrap();
        }
        let keys: Vec<(&str, &str)> = page.objects.iter().map(|((namespace, name), _)| (namespace.as_str(), name.as_str())).collect();
        assert_eq!(keys, [("prod", "web"), ("", "b"), ("", ""), ("", "")]);
        assert_eq!((page.continue_token.as_deref(), page.resource_version.as_deref()), (Some("t"), Some("9")));
        let last = parse_list_page(r#"{"metadata":{"resourceVersion":"9","continue":""},"items":null}"#).unwrap();
        assert!(last.objects.is_empty() && last.continue_token.is_none());
        for broken in [r#"{"items":[1]}"#, r#"{"items":["x"]}"#, r#"{"items":{}}"#, "[", r#"{"items":[{"metadata":{"name":5}}]}"#] {
            assert!(parse_list_page(broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn watches_ask_for_bookmarks_and_no_compression() {
        let request = requests("app=web", "https://example.com").watch("42", Some(Duration::from_secs(290))).unwrap();
        assert_eq!(request.uri(), "/api/v1/pods?labelSelector=app%3Dweb&watch=true&allowWatchBookmarks=true&resourceVersion=42&timeoutSeconds=290");
        assert_eq!(request.headers()[http::header::ACCEPT_ENCODING], "identity");
    }
}
