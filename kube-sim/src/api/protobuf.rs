//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for built-in types: the `k8s\0` envelope around a
//! `runtime.Unknown`, then the type's own message, both decoded with `k8s-pb` (kube-rs's
//! bindings of the Kubernetes protos). The simulator stores JSON, so each message becomes the
//! JSON object the API server would have decoded, for the kinds kubectl creates from the command
//! line (`kubectl create namespace | configmap | secret | serviceaccount | deployment`, the
//! reviews of `kubectl auth can-i`): their metadata and the fields those commands set. Any other
//! kind is 415, as from a server without that encoding.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authorization::v1 as authorization;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The media type.
pub(super) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// A JSON object of the fields that are set: `None`, empty strings, lists and objects are left
/// out, as Go's `omitempty` leaves them out (Go writes every string that is not a pointer, so an
/// empty one means unset; an empty object, such as the `resources: {}` of `kubectl create
/// deployment`, means what its absence means). Booleans and numbers that are not pointers in Go
/// are passed only when true or not zero, for the same reason.
#[derive(Default)]
struct Object(Map<String, Value>);

impl Object {
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            self.0.insert(key.to_owned(), value);
        }
        self
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn strings(map: &BTreeMap<String, String>) -> Value {
    json!(map)
}

fn bytes(map: &BTreeMap<String, Vec<u8>>) -> Value {
    map.iter().map(|(k, v)| (k.clone(), Value::String(STANDARD.encode(v)))).collect::<Map<_, _>>().into()
}

fn metadata(m: Option<meta::ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    Object::default()
        .set("name", m.name)
        .set("generateName", m.generate_name)
        .set("namespace", m.namespace)
        .set("labels", strings(&m.labels))
        .set("annotations", strings(&m.annotations))
        .set("finalizers", m.finalizers)
        .done()
}

fn label_selector(s: Option<meta::LabelSelector>) -> Value {
    let Some(s) = s else { return Value::Null };
    let expressions: Vec<Value> = s.match_expressions.into_iter().map(|e| Object::default().set("key", e.key).set("operator", e.operator).set("values", e.values).done()).collect();
    Object::default().set("matchLabels", strings(&s.match_labels)).set("matchExpressions", expressions).done()
}

fn int_or_string(v: Option<IntOrString>) -> Value {
    match v {
        Some(IntOrString { r#type: Some(1), str_val, .. }) => str_val.into(),
        Some(IntOrString { int_val, .. }) => int_val.unwrap_or_default().into(),
        None => Value::Null,
    }
}

fn container(c: core::Container) -> Value {
    let ports: Vec<Value> = c
        .ports
        .into_iter()
        .map(|p| Object::default().set("name", p.name).set("containerPort", p.container_port).set("hostPort", p.host_port.filter(|n| *n != 0)).set("protocol", p.protocol).done())
        .collect();
    let env: Vec<Value> = c.env.into_iter().filter(|e| e.value_from.is_none()).map(|e| Object::default().set("name", e.name).set("value", e.value).done()).collect();
    let quantities = |q: BTreeMap<String, k8s_pb::apimachinery::pkg::api::resource::Quantity>| q.into_iter().map(|(k, v)| (k, Value::from(v.string))).collect::<Map<_, _>>();
    let resources = c.resources.map(|r| Object::default().set("limits", quantities(r.limits)).set("requests", quantities(r.requests)).done());
    Object::default()
        .set("name", c.name)
        .set("image", c.image)
        .set("command", c.command)
        .set("args", c.args)
        .set("workingDir", c.working_dir)
        .set("ports", ports)
        .set("env", env)
        .set("resources", resources)
        .set("imagePullPolicy", c.image_pull_policy)
        .set("terminationMessagePath", c.termination_message_path)
        .set("terminationMessagePolicy", c.termination_message_policy)
        .set("stdin", c.stdin.filter(|b| *b))
        .set("tty", c.tty.filter(|b| *b))
        .done()
}

fn pod_template(t: Option<core::PodTemplateSpec>) -> Value {
    let t = t.unwrap_or_default();
    let s = t.spec.unwrap_or_default();
    let spec = Object::default()
        .set("initContainers", s.init_containers.into_iter().map(container).collect::<Vec<_>>())
        .set("containers", s.containers.into_iter().map(container).collect::<Vec<_>>())
        .set("restartPolicy", s.restart_policy)
        .set("terminationGracePeriodSeconds", s.termination_grace_period_seconds)
        .set("dnsPolicy", s.dns_policy)
        .set("nodeSelector", strings(&s.node_selector))
        .set("serviceAccountName", s.service_account_name)
        .set("hostname", s.hostname)
        .set("subdomain", s.subdomain)
        .done();
    json!({"metadata": metadata(t.metadata), "spec": spec})
}

fn deployment(d: apps::Deployment) -> Value {
    let s = d.spec.unwrap_or_default();
    let strategy = s.strategy.map(|st| {
        let rolling = st.rolling_update.map(|r| Object::default().set("maxUnavailable", int_or_string(r.max_unavailable)).set("maxSurge", int_or_string(r.max_surge)).done());
        Object::default().set("type", st.r#type).set("rollingUpdate", rolling).done()
    });
    let spec = Object::default()
        .set("replicas", s.replicas)
        .set("selector", label_selector(s.selector))
        .set("template", pod_template(s.template))
        .set("strategy", strategy)
        .set("minReadySeconds", s.min_ready_seconds.filter(|n| *n != 0))
        .set("revisionHistoryLimit", s.revision_history_limit)
        .set("paused", s.paused.filter(|b| *b))
        .set("progressDeadlineSeconds", s.progress_deadline_seconds)
        .done();
    json!({"metadata": metadata(d.metadata), "spec": spec})
}

fn access_review(r: authorization::SelfSubjectAccessReview) -> Value {
    let s = r.spec.unwrap_or_default();
    let resource = s.resource_attributes.map(|a| {
        Object::default()
            .set("namespace", a.namespace)
            .set("verb", a.verb)
            .set("group", a.group)
            .set("version", a.version)
            .set("resource", a.resource)
            .set("subresource", a.subresource)
            .set("name", a.name)
            .done()
    });
    let non_resource = s.non_resource_attributes.map(|a| Object::default().set("path", a.path).set("verb", a.verb).done());
    json!({"metadata": metadata(r.metadata), "spec": Object::default().set("resourceAttributes", resource).set("nonResourceAttributes", non_resource).done()})
}

/// The body as the JSON object it encodes, for `expected_kind`.
pub(super) fn decode(expected_kind: &str, body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| ApiError::bad_request("the protobuf body lacks the k8s envelope"))?;
    let unknown = Unknown::decode(envelope).map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if !kind.is_empty() && kind != expected_kind {
        return Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match the expected kind ({expected_kind})")));
    }
    let raw = unknown.raw.unwrap_or_default();
    fn typed<M: Message + Default>(raw: &[u8], kind: &str) -> Result<M, ApiError> {
        M::decode(raw).map_err(|e| ApiError::bad_request(format!("error decoding protobuf {kind}: {e}")))
    }
    let mut object = match expected_kind {
        "Namespace" => {
            let n: core::Namespace = typed(&raw, expected_kind)?;
            let finalizers = n.spec.map(|s| s.finalizers).unwrap_or_default();
            json!({"metadata": metadata(n.metadata), "spec": Object::default().set("finalizers", finalizers).done()})
        }
        "ConfigMap" => {
            let c: core::ConfigMap = typed(&raw, expected_kind)?;
            Object::default().set("metadata", metadata(c.metadata)).set("immutable", c.immutable).set("data", strings(&c.data)).set("binaryData", bytes(&c.binary_data)).done()
        }
        "Secret" => {
            let s: core::Secret = typed(&raw, expected_kind)?;
            Object::default().set("metadata", metadata(s.metadata)).set("immutable", s.immutable).set("type", s.r#type).set("data", bytes(&s.data)).set("stringData", strings(&s.string_data)).done()
        }
        "ServiceAccount" => {
            let s: core::ServiceAccount = typed(&raw, expected_kind)?;
            Object::default().set("metadata", metadata(s.metadata)).set("automountServiceAccountToken", s.automount_service_account_token).done()
        }
        "Deployment" => deployment(typed(&raw, expected_kind)?),
        "SelfSubjectAccessReview" => access_review(typed(&raw, expected_kind)?),
        "SelfSubjectRulesReview" => {
            let r: authorization::SelfSubjectRulesReview = typed(&raw, expected_kind)?;
            json!({"metadata": metadata(r.metadata), "spec": {"namespace": r.spec.and_then(|s| s.namespace).unwrap_or_default()}})
        }
        _ => return Err(ApiError::unsupported_body_type(MEDIA_TYPE)),
    };
    object["kind"] = json!(expected_kind);
    object["apiVersion"] = json!(type_meta.api_version.unwrap_or_default());
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown { type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }), raw: Some(raw), ..Default::default() };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    fn meta(name: &str) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta { name: Some(name.into()), labels: [("app".to_owned(), name.to_owned())].into(), ..Default::default() })
    }

    #[test]
    fn reads_the_reviews_kubectl_sends() {
        let attributes = authorization::ResourceAttributes { namespace: Some("demo".into()), verb: Some("create".into()), resource: Some("pods".into()), ..Default::default() };
        let review = authorization::SelfSubjectAccessReview {
            spec: Some(authorization::SelfSubjectAccessReviewSpec { resource_attributes: Some(attributes), non_resource_attributes: None }),
            ..Default::default()
        };
        let decoded = decode("SelfSubjectAccessReview", &envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", review.encode_to_vec())).unwrap();
        assert_eq!(decoded["spec"]["resourceAttributes"], json!({"namespace": "demo", "verb": "create", "resource": "pods"}));
        let rules = authorization::SelfSubjectRulesReview { spec: Some(authorization::SelfSubjectRulesReviewSpec { namespace: Some("default".into()) }), ..Default::default() };
        assert_eq!(decode("SelfSubjectRulesReview", &envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview", rules.encode_to_vec())).unwrap()["spec"], json!({"namespace": "default"}));
    }

    #[test]
    fn reads_what_kubectl_create_sends() {
        let secret = core::Secret { metadata: meta("creds"), r#type: Some("Opaque".into()), data: [("password".to_owned(), b"hunter2".to_vec())].into(), ..Default::default() };
        let decoded = decode("Secret", &envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(decoded, json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "creds", "labels": {"app": "creds"}}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}));

        // As Go writes it: every string and non-pointer boolean, set or not.
        let container = core::Container {
            name: Some("web".into()),
            image: Some("nginx:1.27".into()),
            working_dir: Some(String::new()),
            stdin: Some(false),
            resources: Some(Default::default()),
            ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
            ..Default::default()
        };
        let template = core::PodTemplateSpec { metadata: meta("web"), spec: Some(core::PodSpec { containers: vec![container], ..Default::default() }) };
        let selector = meta::LabelSelector { match_labels: [("app".to_owned(), "web".to_owned())].into(), ..Default::default() };
        let spec = apps::DeploymentSpec { replicas: Some(2), selector: Some(selector), template: Some(template), strategy: Some(Default::default()), ..Default::default() };
        let deployment = apps::Deployment { metadata: meta("web"), spec: Some(spec), ..Default::default() };
        let decoded = decode("Deployment", &envelope("apps/v1", "Deployment", deployment.encode_to_vec())).unwrap();
        assert_eq!(decoded["spec"]["replicas"], 2);
        assert_eq!(decoded["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
        assert_eq!(decoded["spec"]["template"]["spec"]["containers"], json!([{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]));

        let namespace = core::Namespace { metadata: meta("team"), ..Default::default() };
        assert_eq!(decode("Namespace", &envelope("v1", "Namespace", namespace.encode_to_vec())).unwrap()["metadata"]["name"], "team");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(decode("Pod", &envelope("v1", "Pod", Vec::new())).unwrap_err().code, 415, "kinds it cannot read");
        assert_eq!(decode("ConfigMap", &envelope("v1", "Secret", Vec::new())).unwrap_err().code, 400, "a kind other than the path's");
        assert_eq!(decode("SelfSubjectRulesReview", b"{}").unwrap_err().code, 400);
        assert_eq!(decode("SelfSubjectRulesReview", &[b'k', b'8', b's', 0, 0xff]).unwrap_err().code, 400);
    }
}
