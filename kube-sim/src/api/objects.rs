//! Writes beyond plain create/update/delete: patches, the status subresource, deletecollection,
//! and pod logs.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Query, json_response};
use crate::{SimState, openapi, strategic};
use crate::resources::{PODS, ResourceDef};
use crate::selectors::Selector;
use crate::status::ApiError;
use crate::logs::Line;
use crate::store::Write;
use chrono::{DateTime, Utc};

/// The `dryRun` parameter of a write whose options are of kind `options` (`CreateOptions`, ...):
/// every value must be `All`, as the API server's `ValidateDryRun` requires (422 otherwise).
pub(super) fn dry_run(query: &Query, options: &str) -> Result<Write, ApiError> {
    dry_run_values(query.all("dryRun").iter().map(String::as_str), options)
}

/// A delete's `dryRun`, from the query or, as kubectl and client-go send it, from the
/// `DeleteOptions` body.
pub(super) fn delete_dry_run(query: &Query, body: &[u8]) -> Result<Write, ApiError> {
    let options: Value = match body.iter().all(u8::is_ascii_whitespace) {
        true => Value::Null,
        false => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?,
    };
    let from_body = options.get("dryRun").and_then(Value::as_array).into_iter().flatten().map(|v| v.as_str().unwrap_or_default());
    dry_run_values(query.all("dryRun").iter().map(String::as_str).chain(from_body), "DeleteOptions")
}

fn dry_run_values<'a>(values: impl Iterator<Item = &'a str>, options: &str) -> Result<Write, ApiError> {
    let values: Vec<&str> = values.collect();
    if values.is_empty() {
        return Ok(Write::Commit);
    }
    if let Some(bad) = values.iter().find(|v| **v != "All") {
        return Err(ApiError::invalid(options, "", &[("dryRun", "FieldValueNotSupported", format!("Unsupported value: {bad:?}: supported values: \"All\""))]));
    }
    Ok(Write::DryRun)
}

/// The fields of `object` its type's schema lacks, as `fieldValidation` wants them handled:
/// `Strict` rejects them (400, the API server's strict decoding error), `Warn` (the default)
/// returns them as warnings for the response, `Ignore` lets them be.
pub(super) fn validate_fields(query: &Query, resource: &ResourceDef, object: &Value) -> Result<Vec<String>, ApiError> {
    let mode = query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict" | "") {
        return Err(ApiError::bad_request(format!("fieldValidation parameter unsupported: {mode}")));
    }
    let Some(definition) = openapi::definition_of(resource).filter(|_| mode != "Ignore") else { return Ok(Vec::new()) };
    let unknown: Vec<String> = openapi::unknown_fields(object, definition).iter().map(|f| format!("unknown field {f:?}")).collect();
    if mode == "Strict" && !unknown.is_empty() {
        let kind = resource.kind;
        return Err(ApiError::bad_request(format!("{kind} in version {:?} cannot be handled as a {kind}: strict decoding error: {}", resource.version, unknown.join(", "))));
    }
    Ok(unknown)
}

/// `response` with a `Warning` header for each warning, as the API server sends them.
pub(super) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        if let Ok(value) = header::HeaderValue::from_str(&format!("299 - {warning:?}")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(target) = target.as_object_mut() else { return };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A PATCH body, decoded by its content type.
enum PatchBody {
    Merge(Value),
    Strategic(Value),
    Json(json_patch::Patch),
}

impl PatchBody {
    /// Decodes `body` as `content_type` says: merge, strategic merge or JSON patch; any other
    /// type is 415.
    fn parse(content_type: &str, body: &[u8]) -> Result<PatchBody, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let bad_json = |e: serde_json::Error| ApiError::bad_request(format!("error decoding patch: {e}"));
        Ok(match media {
            "application/merge-patch+json" => PatchBody::Merge(serde_json::from_slice(body).map_err(bad_json)?),
            "application/strategic-merge-patch+json" => PatchBody::Strategic(serde_json::from_slice(body).map_err(bad_json)?),
            "application/json-patch+json" => PatchBody::Json(serde_json::from_slice(body).map_err(bad_json)?),
            other => return Err(ApiError::unsupported_media_type(other)),
        })
    }

    /// `target`, an object of the OpenAPI definition `schema`, with the patch applied; it must
    /// stay an object.
    fn apply(&self, target: &Value, schema: Option<&str>, kind: &str, name: &str) -> Result<Value, ApiError> {
        let mut patched = target.clone();
        match self {
            PatchBody::Merge(p) => merge_patch(&mut patched, p),
            PatchBody::Strategic(p) => {
                patched = strategic::apply(target, p, strategic::Schema::new(openapi::definitions(), schema)).map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
            PatchBody::Json(p) => json_patch::patch(&mut patched, p).map_err(|e| ApiError::invalid(kind, name, &[("patch", "FieldValueInvalid", e.to_string())]))?,
        }
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch must leave an object"));
        }
        Ok(patched)
    }
}

/// Applies a PATCH body of `content_type` to `target`, an object of the OpenAPI definition
/// `schema` (what `/scale` patches: a view of an object rather than the object).
pub(super) fn apply_patch(target: &Value, schema: &str, content_type: &str, body: &[u8], kind: &str, name: &str) -> Result<Value, ApiError> {
    PatchBody::parse(content_type, body)?.apply(target, Some(schema), kind, name)
}

/// `PATCH` an object (or its status).
#[allow(clippy::too_many_arguments)]
pub(super) fn patch(
    state: &SimState,
    resource: &'static ResourceDef,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    status_only: bool,
    write: Write,
    query: &Query,
) -> Result<(Arc<Value>, Vec<String>), ApiError> {
    let patch = PatchBody::parse(content_type, body)?;
    let mut warnings = Vec::new();
    let patched = state.store.modify_with(resource, namespace, name, write, |object| {
        let patched = patch.apply(object, openapi::definition_of(resource), resource.kind, name)?;
        warnings = validate_fields(query, resource, &patched)?;
        *object = if status_only { set_status(object.clone(), patched.get("status").cloned()) } else { patched };
        Ok(())
    })?;
    Ok((patched, warnings))
}

fn set_status(mut object: Value, status: Option<Value>) -> Value {
    match status {
        Some(status) => object["status"] = status,
        None => {
            object.as_object_mut().map(|m| m.remove("status"));
        }
    }
    object
}

/// `PUT .../status`: only the status of the body is taken.
pub(super) fn update_status(state: &SimState, resource: &'static ResourceDef, namespace: &str, name: &str, body: Value, write: Write) -> Result<Arc<Value>, ApiError> {
    state.store.modify_with(resource, namespace, name, write, |object| {
        if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != object.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::conflict(resource.plural, name));
        }
        *object = set_status(object.clone(), body.get("status").cloned());
        Ok(())
    })
}

/// `DELETE <collection>`: deletes every object matching the selectors, returns the list.
pub(super) fn delete_collection(state: &SimState, resource: &'static ResourceDef, namespace: Option<&str>, query: &Query, body: &[u8]) -> Result<Response, ApiError> {
    let write = delete_dry_run(query, body)?;
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), resource)?;
    let (_, items) = state.store.list(resource, namespace);
    let mut deleted = Vec::new();
    for item in items.iter().filter(|o| selector.matches(o)) {
        let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        // Already gone (deleted concurrently) is fine for a collection delete.
        if let Ok(last) = state.store.delete_with(resource, ns, name, write) {
            deleted.push(last);
        }
    }
    let body = json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(),
                      "metadata": {"resourceVersion": state.store.current_rv().to_string()}, "items": deleted});
    Ok(json_response(200, &body))
}

/// What a log request asked for (`PodLogOptions`).
struct LogOptions {
    container: String,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    since: Option<DateTime<Utc>>,
    limit_bytes: Option<usize>,
}

impl LogOptions {
    /// Parses and validates the query as the API server does: a value that is not a number is
    /// 400, one out of range 422 `Invalid`.
    fn parse(query: &Query, pod: &Value, name: &str) -> Result<LogOptions, ApiError> {
        let containers: Vec<&str> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        let container = match (query.get("container"), containers.as_slice()) {
            (Some(c), _) if containers.contains(&c) => c,
            (Some(c), _) => return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
            (None, [only]) => only,
            (None, _) => {
                return Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" "))));
            }
        };
        let number = |key: &str| -> Result<Option<i64>, ApiError> {
            query.get(key).filter(|v| !v.is_empty()).map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{key}: invalid value {v:?}: must be an integer")))).transpose()
        };
        let invalid = |field: &str, value: i64, rule: &str| ApiError::invalid("PodLogOptions", name, &[(field, "FieldValueInvalid", format!("Invalid value: {value}: {rule}"))]);
        let tail_lines = match number("tailLines")? {
            Some(n) if n < 0 => return Err(invalid("tailLines", n, "must be greater than or equal to 0")),
            n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let limit_bytes = match number("limitBytes")? {
            Some(n) if n < 1 => return Err(invalid("limitBytes", n, "must be greater than 0")),
            n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let since_seconds = match number("sinceSeconds")? {
            Some(n) if n < 1 => return Err(invalid("sinceSeconds", n, "must be greater than 0")),
            n => n,
        };
        let since_time = query
            .get("sinceTime")
            .filter(|v| !v.is_empty())
            .map(|v| DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|e| ApiError::bad_request(format!("sinceTime: invalid value {v:?}: {e}"))))
            .transpose()?;
        let since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("PodLogOptions", name, &[("", "FieldValueForbidden", "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".to_owned())]));
            }
            (Some(seconds), None) => Utc::now().checked_sub_signed(chrono::TimeDelta::try_seconds(seconds).unwrap_or(chrono::TimeDelta::MAX)),
            (None, time) => time,
        };
        Ok(LogOptions {
            container: container.to_owned(),
            follow: query.flag("follow"),
            previous: query.flag("previous"),
            timestamps: query.flag("timestamps"),
            tail_lines,
            since,
            limit_bytes,
        })
    }

    fn render(&self, line: &Line) -> String {
        if self.timestamps {
            format!("{} {}\n", line.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), line.text)
        } else {
            format!("{}\n", line.text)
        }
    }
}

/// Cuts `text` to at most `budget` bytes (at a character boundary) and charges it.
fn charge(text: &mut String, budget: &mut Option<usize>) {
    if let Some(left) = budget {
        let mut cut = (*left).min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        *left -= cut;
    }
}

/// `GET .../pods/{name}/log`: the container's log (`logs`), with `tailLines`, `sinceSeconds`,
/// `sinceTime`, `timestamps`, `limitBytes` and `previous`; with `follow=true`, a stream of
/// what the container writes until the client goes, the pod goes or `limitBytes` is reached.
pub(super) async fn logs(state: &Arc<SimState>, namespace: &str, name: &str, query: &Query) -> Result<Response, ApiError> {
    let pod = state.store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
    let options = LogOptions::parse(query, &pod, name)?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let read = crate::logs::with_start(state, &pod, &options.container, |start| state.logs.read(&uid, &options.container, start, options.previous));
    let Some((lines, cursor)) = read else {
        return Err(ApiError::bad_request(format!("previous terminated container {:?} in pod {name:?} not found", options.container)));
    };
    let lines: Vec<&Line> = lines.iter().filter(|l| options.since.is_none_or(|since| l.at >= since)).collect();
    let tail = options.tail_lines.unwrap_or(usize::MAX).min(lines.len());
    let mut text: String = lines[lines.len() - tail..].iter().map(|l| options.render(l)).collect();
    let mut budget = options.limit_bytes;
    charge(&mut text, &mut budget);
    if !options.follow || options.previous || budget == Some(0) {
        return Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(16);
    let _ = tx.try_send(Ok(text.into()));
    tokio::spawn(follow(state.clone(), pod, options, cursor, budget, tx));
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// How often a follow looks at `container.log` for lines processes appended.
const FILE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

async fn follow(state: Arc<SimState>, pod: Arc<Value>, options: LogOptions, mut cursor: crate::logs::Cursor, mut budget: Option<usize>, tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::convert::Infallible>>) {
    let _counted = state.logs.follow();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    loop {
        let (lines, next, mut written) = crate::logs::with_start(&state, &pod, &options.container, |start| state.logs.since(uid, &options.container, start, cursor));
        cursor = next;
        for line in &lines {
            let mut text = options.render(line);
            charge(&mut text, &mut budget);
            if !text.is_empty() && tx.send(Ok(text.into())).await.is_err() {
                return;
            }
            if budget == Some(0) {
                return;
            }
        }
        tokio::select! {
            _ = written.changed() => {}
            _ = tokio::time::sleep(FILE_POLL) => {}
            _ = tx.closed() => return,
            _ = state.shutdown.cancelled() => return,
        }
        // The container's log ends with its pod.
        if state.store.get(&PODS, namespace, name).is_none_or(|p| p["metadata"]["uid"] != uid) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "list": [3]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "list": [3]}));
    }
}
