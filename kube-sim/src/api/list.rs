//! `GET <collection>`: resourceVersion semantics, selectors and `limit`/`continue` paging
//! (reference `kube-api-semantics.md` §6).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::table::TableRequest;
use super::{Query, json_response};
use crate::SimState;
use crate::resources::ResourceDef;
use crate::selectors::Selector;
use crate::status::ApiError;

/// How long a request for a resourceVersion newer than the store's waits before 504, as the
/// watch cache does.
pub(crate) const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

/// The `resourceVersion` query value, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestedVersion {
    /// Unset or empty: most recent.
    Latest,
    /// `"0"`: any.
    Any,
    /// A specific revision.
    At(u64),
}

impl RequestedVersion {
    pub(crate) fn parse(query: &Query) -> Result<RequestedVersion, ApiError> {
        match query.get("resourceVersion") {
            None | Some("") => Ok(RequestedVersion::Latest),
            Some("0") => Ok(RequestedVersion::Any),
            Some(raw) => raw
                .parse::<u64>()
                .map(RequestedVersion::At)
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {raw:?}: resourceVersion must be an unsigned integer"))),
        }
    }
}

fn list_options_invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid("ListOptions", "", &[(field, "FieldValueForbidden", format!("Forbidden: {message}"))])
}

/// Validates the combinations the API server forbids (422 `Invalid`, kind `ListOptions`).
pub(crate) fn validate_list_options(query: &Query, is_watch: bool) -> Result<(), ApiError> {
    let rv = query.get("resourceVersion").unwrap_or_default();
    let rv_match = query.get("resourceVersionMatch").unwrap_or_default();
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true" || v == "1");
    if !matches!(rv_match, "" | "Exact" | "NotOlderThan") {
        return Err(ApiError::invalid("ListOptions", "", &[("resourceVersionMatch", "FieldValueNotSupported", format!("Unsupported value: {rv_match:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""))]));
    }
    if query.get("sendInitialEvents").is_some() && !is_watch {
        return Err(list_options_invalid("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    if is_watch {
        if send_initial && rv_match != "NotOlderThan" {
            return Err(list_options_invalid("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        if !send_initial && !rv_match.is_empty() {
            return Err(list_options_invalid("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
        }
        return Ok(());
    }
    if !rv_match.is_empty() {
        if rv.is_empty() {
            return Err(list_options_invalid("resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided"));
        }
        if query.get("continue").is_some_and(|c| !c.is_empty()) {
            return Err(list_options_invalid("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
        }
        if rv_match == "Exact" && rv == "0" {
            return Err(list_options_invalid("resourceVersionMatch", "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
        }
    }
    Ok(())
}

/// Waits (briefly) until the store has reached `rv`.
pub(crate) async fn wait_for_revision(state: &SimState, rv: u64) -> Result<(), ApiError> {
    let mut revisions = state.store.subscribe_revisions();
    let reached = tokio::time::timeout(TOO_LARGE_WAIT, revisions.wait_for(|current| *current >= rv)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ApiError::too_large_resource_version(rv, state.store.current_rv())),
    }
}

/// A continue token: the snapshot revision and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token: malformed"))
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (meta["namespace"].as_str().unwrap_or_default().to_owned(), meta["name"].as_str().unwrap_or_default().to_owned())
}

/// Serves a list.
pub(super) async fn list(state: &Arc<SimState>, resource: &'static ResourceDef, namespace: Option<&str>, query: &Query, table: Option<TableRequest>) -> Result<Response, ApiError> {
    state.hooks.list_requests.fetch_add(1, Ordering::Relaxed);
    validate_list_options(query, false)?;
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), resource)?;
    let requested = RequestedVersion::parse(query)?;
    let limit = match query.get("limit") {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {raw:?}")))?).filter(|l| *l > 0),
    };
    let continue_token = query.get("continue").filter(|c| !c.is_empty()).map(decode_continue).transpose()?;
    let exact = query.get("resourceVersionMatch") == Some("Exact") || (limit.is_some() && query.get("resourceVersionMatch").is_none());

    let (rv, items, after) = if let Some(token) = continue_token {
        if matches!(requested, RequestedVersion::At(_)) {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        let items = snapshot_at(state, resource, namespace, token.rv).map_err(|_| ApiError::expired(CONTINUE_EXPIRED))?;
        (token.rv, items, Some((token.ns, token.name)))
    } else {
        match requested {
            RequestedVersion::Latest | RequestedVersion::Any => {
                let (rv, items) = state.store.list(resource, namespace);
                (rv, items, None)
            }
            RequestedVersion::At(rv) => {
                wait_for_revision(state, rv).await?;
                if exact {
                    let items = snapshot_at(state, resource, namespace, rv)
                        .map_err(|_| ApiError::expired("The resourceVersion for the provided list is too old."))?;
                    (rv, items, None)
                } else {
                    let (rv, items) = state.store.list(resource, namespace);
                    (rv, items, None)
                }
            }
        }
    };

    let mut matching = items.into_iter().filter(|o| selector.matches(o)).filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a));
    let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let page: Vec<Arc<Value>> = match limit {
        Some(n) => matching.by_ref().take(n).collect(),
        None => matching.by_ref().collect(),
    };
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = page.last()
    {
        let (ns, name) = key_of(last);
        let token = serde_json::to_vec(&ContinueToken { rv, ns, name }).expect("token serialises");
        metadata["continue"] = json!(URL_SAFE_NO_PAD.encode(token));
        if selector.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let body = match table {
        Some(table) => table.list(resource, metadata, &page),
        None => json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": metadata, "items": page}),
    };
    Ok(json_response(200, &body))
}

fn snapshot_at(state: &SimState, resource: &'static ResourceDef, namespace: Option<&str>, rv: u64) -> Result<Vec<Arc<Value>>, crate::store::Expired> {
    state.store.list_at(resource, namespace, rv)
}
