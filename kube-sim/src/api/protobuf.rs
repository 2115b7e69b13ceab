//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for built-in types: the `k8s\0` envelope around a
//! `runtime.Unknown`, then the type's own message. The simulator speaks JSON; it reads protobuf
//! only for the kinds whose messages it knows (the reviews `kubectl auth can-i` creates), and
//! answers any other with 415, as a server without that encoding would.

use prost::Message as _;
use serde_json::{Value, json};

use crate::status::ApiError;

/// The media type.
pub(super) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

/// `SelfSubjectAccessReview` (metadata and status are not read).
#[derive(Clone, PartialEq, prost::Message)]
struct AccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

/// `SelfSubjectRulesReview` (metadata and status are not read).
#[derive(Clone, PartialEq, prost::Message)]
struct RulesReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<RulesReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RulesReviewSpec {
    #[prost(string, tag = "1")]
    namespace: String,
}

/// The body as the JSON object it encodes, for `expected_kind`.
pub(super) fn decode(expected_kind: &str, body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = || ApiError::unsupported_body_type(MEDIA_TYPE);
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| ApiError::bad_request("the protobuf body lacks the k8s envelope"))?;
    let unknown = Unknown::decode(envelope).map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    if !type_meta.kind.is_empty() && type_meta.kind != expected_kind {
        return Err(ApiError::bad_request(format!("the kind in the data ({}) does not match the expected kind ({expected_kind})", type_meta.kind)));
    }
    let bad = |e: prost::DecodeError| ApiError::bad_request(format!("error decoding protobuf {expected_kind}: {e}"));
    let spec = match expected_kind {
        "SelfSubjectAccessReview" => {
            let spec = AccessReview::decode(unknown.raw.as_slice()).map_err(bad)?.spec.unwrap_or_default();
            let mut out = json!({});
            if let Some(a) = spec.resource_attributes {
                out["resourceAttributes"] = json!({"namespace": a.namespace, "verb": a.verb, "group": a.group, "version": a.version,
                                                   "resource": a.resource, "subresource": a.subresource, "name": a.name});
            }
            if let Some(a) = spec.non_resource_attributes {
                out["nonResourceAttributes"] = json!({"path": a.path, "verb": a.verb});
            }
            out
        }
        "SelfSubjectRulesReview" => {
            let spec = RulesReview::decode(unknown.raw.as_slice()).map_err(bad)?.spec.unwrap_or_default();
            json!({"namespace": spec.namespace})
        }
        _ => return Err(unsupported()),
    };
    Ok(json!({"kind": expected_kind, "apiVersion": type_meta.api_version, "metadata": {}, "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown { type_meta: Some(TypeMeta { api_version: "authorization.k8s.io/v1".into(), kind: kind.into() }), raw };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    #[test]
    fn reads_the_reviews_kubectl_sends() {
        let attributes = ResourceAttributes { namespace: "demo".into(), verb: "create".into(), resource: "pods".into(), ..Default::default() };
        let review = AccessReview { spec: Some(AccessReviewSpec { resource_attributes: Some(attributes), non_resource_attributes: None }) };
        let decoded = decode("SelfSubjectAccessReview", &envelope("SelfSubjectAccessReview", review.encode_to_vec())).unwrap();
        assert_eq!(decoded["spec"]["resourceAttributes"]["namespace"], "demo");
        assert_eq!(decoded["spec"]["resourceAttributes"]["verb"], "create");
        let rules = RulesReview { spec: Some(RulesReviewSpec { namespace: "default".into() }) };
        assert_eq!(decode("SelfSubjectRulesReview", &envelope("SelfSubjectRulesReview", rules.encode_to_vec())).unwrap()["spec"], json!({"namespace": "default"}));
        assert_eq!(decode("ConfigMap", &envelope("ConfigMap", Vec::new())).unwrap_err().code, 415, "kinds it cannot read");
        assert_eq!(decode("SelfSubjectRulesReview", b"{}").unwrap_err().code, 400);
        assert_eq!(decode("SelfSubjectRulesReview", &[b'k', b'8', b's', 0, 0xff]).unwrap_err().code, 400);
    }
}
