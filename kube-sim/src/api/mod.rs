//! The HTTP surface: discovery, resource paths, pod subresources and the `/_sim/` test hooks.
//!
//! Kubernetes paths are too regular for a static route table (`/api/v1/namespaces/x/pods/y/exec`
//! and `/apis/apps/v1/deployments` are the same shape), so every non-hook request goes through
//! [`dispatch`], which parses the path into a [`Target`] once.

mod forward_hooks;
pub mod hooks;
mod list;
mod metrics;
mod objects;
mod protobuf;
mod reviews;
mod scale;
mod table;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::{SimState, openapi};
use crate::auth::{self, Identity};
use crate::resources::{self, ResourceDef};
use crate::runtime::{self, Subresource};
use crate::status::ApiError;

/// The simulator's router.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .nest("/_sim", hooks::router())
        .fallback(dispatch)
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// A request path, parsed.
#[derive(Debug, PartialEq)]
enum Target {
    Version,
    ApiVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiIndex,
    OpenApi(String),
    Health,
    /// A collection: `namespace` is `None` for cluster-scoped resources and all-namespace lists.
    Collection { resource: &'static ResourceDef, namespace: Option<String> },
    Object { resource: &'static ResourceDef, namespace: Option<String>, name: String, sub: Option<String> },
}

fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Target::Version),
        ["healthz" | "readyz" | "livez"] => return Some(Target::Health),
        ["api"] => return Some(Target::ApiVersions),
        ["apis"] => return Some(Target::GroupList),
        ["apis", group] => return Some(Target::Group((*group).to_owned())),
        ["openapi", "v3"] => return Some(Target::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => return Some(Target::OpenApi(rest.join("/"))),
        ["api", version] => return Some(Target::ResourceList { group: String::new(), version: (*version).to_owned() }),
        ["apis", group, version] => {
            return Some(Target::ResourceList { group: (*group).to_owned(), version: (*version).to_owned() });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let resource = resources::find(group, version, rest.first()?)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    match rest {
        [_] => Some(Target::Collection { resource, namespace }),
        [_, name] | [_, name, _] if namespace.is_some() || !resource.namespaced => Some(Target::Object {
            resource,
            namespace,
            name: (*name).to_owned(),
            sub: rest.get(2).map(|s| (*s).to_owned()),
        }),
        _ => None,
    }
}

/// Query parameters; a repeated key keeps every value (e.g. exec's `command`).
pub(crate) struct Query(HashMap<String, Vec<String>>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in crate::runtime::query_pairs(raw.unwrap_or_default()) {
            map.entry(k).or_default().push(v);
        }
        Query(map)
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// `key` as a Kubernetes boolean (`true`/`1`).
    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }
}


/// Path and query parsing for the fuzz targets (`fuzz/`); not a public API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::resources::ResourceDef;

    /// What a request path names, when it names a collection or an object.
    #[derive(Debug, PartialEq)]
    pub struct ParsedPath {
        /// The served resource.
        pub resource: &'static ResourceDef,
        /// The namespace segment, when the path has one.
        pub namespace: Option<String>,
        /// The object's name, for object paths.
        pub name: Option<String>,
        /// The subresource (`exec`, `log`, …), for object paths that have one.
        pub sub: Option<String>,
    }

    /// Parses `path` as the router does: `None` when it is not a collection or object path.
    pub fn parse_path(path: &str) -> Option<ParsedPath> {
        match super::parse_target(path)? {
            super::Target::Collection { resource, namespace } => Some(ParsedPath { resource, namespace, name: None, sub: None }),
            super::Target::Object { resource, namespace, name, sub } => Some(ParsedPath { resource, namespace, name: Some(name), sub }),
            _ => None,
        }
    }

    /// The first value of `key` in `raw`, as handlers read it.
    pub fn query_get(raw: &str, key: &str) -> Option<String> {
        super::Query::parse(Some(raw)).get(key).map(str::to_owned)
    }

    /// Whether `key` is set to a Kubernetes `true` in `raw`, as handlers read flags.
    pub fn query_flag(raw: &str, key: &str) -> bool {
        super::Query::parse(Some(raw)).flag(key)
    }
}

/// A JSON response with the status code.
pub(crate) fn json_response(code: u16, value: &Value) -> Response {
    let status = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// Whether the client accepts JSON (the only encoding served).
fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').map(|m| m.split(';').next().unwrap_or_default().trim()).any(|m| {
        matches!(m, "application/json" | "*/*" | "application/*" | "" | "text/plain" | "application/yaml")
    });
    if ok { Ok(()) } else { Err(ApiError::not_acceptable(accept)) }
}

async fn dispatch(State(state): State<Arc<SimState>>, request: Request) -> Response {
    match route(state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route(state: Arc<SimState>, request: Request) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let target = parse_target(&path);
    if target == Some(Target::Health) {
        return Ok("ok".into_response());
    }
    if let Some(code) = state.hooks.take_fault(&path) {
        return Err(ApiError::injected(code));
    }
    let identity = auth::authenticate(&state.users, request.headers())?;
    let Some(target) = target else {
        return Err(ApiError::no_route());
    };
    let method = request.method().clone();
    let is_upgrade = request.headers().contains_key(header::UPGRADE);
    if !is_upgrade {
        check_accept(request.headers())?;
    }
    let get_only = |value: Option<Value>| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {method}")));
        }
        value.map(|v| json_response(200, &v)).ok_or_else(ApiError::no_route)
    };
    match target {
        Target::Health => unreachable!("answered above"),
        Target::Version => get_only(Some(resources::version())),
        Target::ApiVersions => get_only(Some(resources::api_versions(&state.addr.to_string()))),
        Target::GroupList => get_only(Some(resources::api_group_list())),
        Target::Group(group) => get_only(resources::api_group(&group)),
        Target::ResourceList { group, version } => get_only(resources::api_resource_list(&group, &version)),
        Target::OpenApiIndex => get_only(Some(openapi::index())),
        Target::OpenApi(path) => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {method}")));
            }
            let document = openapi::group_version(&path).ok_or_else(ApiError::no_route)?;
            Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, immutable")], document).into_response())
        }
        Target::Collection { resource, namespace } => {
            let query = Query::parse(request.uri().query());
            collection(&state, &identity, resource, namespace, query, request).await
        }
        Target::Object { resource, namespace, name, sub } => {
            let query = Query::parse(request.uri().query());
            object(state, &identity, resource, namespace, name, sub, query, request).await
        }
    }
}

/// The namespace an authorization check is about: the object's own name for namespaces.
fn scope<'a>(resource: &ResourceDef, namespace: Option<&'a str>, name: Option<&'a str>) -> Option<&'a str> {
    if resource.is_namespaces() { name } else { namespace }
}

async fn collection(
    state: &Arc<SimState>,
    identity: &Identity,
    resource: &'static ResourceDef,
    namespace: Option<String>,
    query: Query,
    request: Request,
) -> Result<Response, ApiError> {
    let ns = namespace.as_deref();
    if resource.is_metrics() {
        return metrics::serve(state, identity, resource, ns, None, request.method(), &query);
    }
    if resource.is_review() {
        // Anyone may ask; nothing is kept to list or watch.
        if request.method() != Method::POST {
            return Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {}", request.method())));
        }
        let body = read_json(request, resource.kind).await?;
        return Ok(json_response(201, &reviews::answer(identity, resource, body)?));
    }
    match *request.method() {
        Method::GET if query.flag("watch") => {
            identity.authorize("watch", resource, ns)?;
            let table = table::requested(request.headers(), &query)?;
            watch::watch(state, resource, namespace, &query, table).await
        }
        Method::GET => {
            identity.authorize("list", resource, ns)?;
            let table = table::requested(request.headers(), &query)?;
            list::list(state, resource, ns, &query, table).await
        }
        Method::POST => {
            let body = read_json(request, resource.kind).await?;
            let ns = if resource.namespaced {
                ns.ok_or_else(|| ApiError::method_not_allowed("create requires a namespace in the path"))?
            } else {
                ""
            };
            let target_ns = if resource.is_namespaces() { body.pointer("/metadata/name").and_then(Value::as_str) } else { Some(ns) };
            identity.authorize("create", resource, target_ns.filter(|n| !n.is_empty()))?;
            let write = objects::dry_run(&query, "CreateOptions")?;
            let warnings = objects::validate_fields(&query, resource, &body)?;
            let created = state.store.create_with(resource, ns, body, write)?;
            Ok(objects::with_warnings(json_response(201, &created), &warnings))
        }
        Method::DELETE => {
            identity.authorize("deletecollection", resource, ns)?;
            let body = read_bytes(request).await?;
            objects::delete_collection(state, resource, ns, &query, &body)
        }
        _ => Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {}", request.method()))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn object(
    state: Arc<SimState>,
    identity: &Identity,
    resource: &'static ResourceDef,
    namespace: Option<String>,
    name: String,
    sub: Option<String>,
    query: Query,
    request: Request,
) -> Result<Response, ApiError> {
    let ns = namespace.clone().unwrap_or_default();
    let method = request.method().clone();
    let auth_ns = scope(resource, namespace.as_deref(), Some(&name));
    if resource.is_review() || (resource.is_metrics() && sub.is_some()) {
        return Err(ApiError::no_route());
    }
    if resource.is_metrics() {
        return metrics::serve(&state, identity, resource, namespace.as_deref(), Some(&name), &method, &query);
    }
    match (sub.as_deref(), &method) {
        (Some(kind @ ("exec" | "attach" | "portforward")), &Method::GET | &Method::POST) if resource.is_pods() => {
            identity.authorize("create", resource, auth_ns)?;
            let sub = match kind {
                "exec" => Subresource::Exec,
                "attach" => Subresource::Attach,
                _ => Subresource::PortForward,
            };
            Ok(runtime::serve(state, sub, ns, name, request).await)
        }
        (Some("log"), &Method::GET) if resource.is_pods() => {
            identity.authorize("get", resource, auth_ns)?;
            objects::logs(&state, &ns, &name, &query).await
        }
        (Some("scale"), _) if resource.has_scale() => scale::serve(&state, identity, resource, &ns, &name, &query, request).await,
        (None | Some("status"), &Method::GET) => {
            identity.authorize("get", resource, auth_ns)?;
            let object = state.store.get(resource, &ns, &name).ok_or_else(|| ApiError::not_found(resource.plural, &name))?;
            match table::requested(request.headers(), &query)? {
                Some(table) => Ok(json_response(200, &table.object(resource, &object))),
                None => Ok(json_response(200, &object)),
            }
        }
        (None | Some("status"), &Method::PUT) => {
            identity.authorize("update", resource, auth_ns)?;
            let write = objects::dry_run(&query, "UpdateOptions")?;
            let body = read_json(request, resource.kind).await?;
            let warnings = objects::validate_fields(&query, resource, &body)?;
            let updated = if sub.is_some() {
                objects::update_status(&state, resource, &ns, &name, body, write)?
            } else {
                state.store.update_with(resource, &ns, &name, body, write)?
            };
            Ok(objects::with_warnings(json_response(200, &updated), &warnings))
        }
        (None | Some("status"), &Method::PATCH) => {
            identity.authorize("patch", resource, auth_ns)?;
            let write = objects::dry_run(&query, "PatchOptions")?;
            let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = read_bytes(request).await?;
            let (patched, warnings) = objects::patch(&state, resource, &ns, &name, &content_type, &body, sub.is_some(), write, &query)?;
            Ok(objects::with_warnings(json_response(200, &patched), &warnings))
        }
        (None, &Method::DELETE) => {
            identity.authorize("delete", resource, auth_ns)?;
            let body = read_bytes(request).await?;
            let write = objects::delete_dry_run(&query, &body)?;
            let deleted = state.store.delete_with(resource, &ns, &name, write)?;
            Ok(json_response(200, &deleted))
        }
        (None | Some("status"), _) => Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {method}"))),
        _ => Err(ApiError::no_route()),
    }
}

/// The most a request body may hold, like the API server's 3 MiB object limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

async fn read_bytes(request: Request) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(Body::new(request.into_body()), MAX_BODY)
        .await
        .map_err(|e| ApiError::request_entity_too_large(e.to_string()))
}

/// A create or update body of `kind`. One that is not a JSON object is refused in the API
/// server's words (apiserver's `transformDecodeError` around apimachinery's JSON serializer),
/// with Go's own texts where serde's differ: a cut-off body, valid JSON that is not an object.
/// `null` decodes to an empty object there, and does here.
///
/// A body of another media type is 415, except protobuf for the kinds `protobuf` can read.
async fn read_json(request: Request, kind: &str) -> Result<Value, ApiError> {
    let media = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "*/*" => {}
        protobuf::MEDIA_TYPE => return protobuf::decode(kind, &read_bytes(request).await?),
        other => return Err(ApiError::unsupported_body_type(other)),
    }
    let bytes = read_bytes(request).await?;
    let detail = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Null) => return Ok(Value::Object(serde_json::Map::new())),
        Ok(object @ Value::Object(_)) => return Ok(object),
        Ok(other) => {
            let found = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Bool(_) => "bool",
                _ => "number",
            };
            format!("json: cannot unmarshal {found} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}")
        }
        Err(error) if error.is_eof() => "unexpected end of JSON input".to_owned(),
        Err(error) => error.to_string(),
    };
    Err(ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {detail} ({})",
        summarize_body(&bytes)
    )))
}

/// The API server's `summarizeData(body, 30)`: the first 30 bytes, as text when the body
/// starts with `{` and in hex otherwise, ` ...` when cut.
fn summarize_body(body: &[u8]) -> String {
    const MAX: usize = 30;
    let (head, cut) = match body.get(..MAX) {
        Some(head) if body.len() > MAX => (head, " ..."),
        _ => (body, ""),
    };
    match head.first() {
        None => "<empty>".to_owned(),
        Some(b'{') => format!("{}{cut}", String::from_utf8_lossy(head)),
        Some(_) => format!("{}{cut}", head.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        let t = |p: &str| parse_target(p);
        assert_eq!(t("/api/v1/pods"), Some(Target::Collection { resource: &resources::PODS, namespace: None }));
        assert_eq!(
            t("/api/v1/namespaces/demo/pods/web-1/exec"),
            Some(Target::Object { resource: &resources::PODS, namespace: Some("demo".into()), name: "web-1".into(), sub: Some("exec".into()) })
        );
        assert_eq!(
            t("/api/v1/namespaces/demo"),
            Some(Target::Object { resource: &resources::NAMESPACES, namespace: None, name: "demo".into(), sub: None })
        );
        assert_eq!(t("/apis/apps/v1/namespaces/demo/deployments"), Some(Target::Collection { resource: &resources::DEPLOYMENTS, namespace: Some("demo".into()) }));
        assert_eq!(t("/api/v1/pods/web-1"), None, "namespaced objects need a namespace");
        assert_eq!(t("/api/v1/widgets"), None);
        assert_eq!(t("/apis/apps/v1"), Some(Target::ResourceList { group: "apps".into(), version: "v1".into() }));
    }

    #[test]
    fn body_summaries_follow_the_api_server() {
        assert_eq!(summarize_body(b""), "<empty>");
        assert_eq!(summarize_body(b"[1]"), "5b315d");
        assert_eq!(summarize_body(b"{\"a\":1}"), "{\"a\":1}");
        let long = format!("{{{}", "x".repeat(40));
        assert_eq!(summarize_body(long.as_bytes()), format!("{{{} ...", "x".repeat(29)));
        assert_eq!(summarize_body(&[b'z'; 31]), format!("{} ...", "7a".repeat(30)));
    }

    #[test]
    fn query_keeps_repeated_keys_and_decodes() {
        let q = Query::parse(Some("command=sh&command=-c&command=echo%20hi%3B+exit%203&tty=1&stdin=false"));
        assert_eq!(q.0["command"], vec!["sh", "-c", "echo hi; exit 3"]);
        assert!(q.flag("tty") && !q.flag("stdin"));
    }
}
