//! `deploy/kubernetes`, as a user applies it: `kubectl kustomize` renders the base and the
//! example overlay, and `kubectl apply --dry-run=server` of each is accepted by an API server
//! (kube-sim) for every object, which stores none of them. The answers are then read for what
//! keeps the proxy working in a cluster: probes, the security context, the config mounted as a
//! folder (so a ConfigMap update reloads live), a grace period longer than the config's
//! `terminalGrace`, a config the proxy accepts, selectors that match the pods, and RBAC bound
//! to the pods' service account in proxy mode only.
//!
//! Ignored by a plain `cargo test` (needs kubectl); `cargo xtask test` runs it with the other
//! kubectl tests (see `kubemux_testkit::kubectl`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube_sim::{Sim, SimConfig};
use kubemux_proxy::auth::AuthMode;
use kubemux_proxy::config;
use kubemux_testkit::kubectl::Kubectl;
use serde_json::{Value, json};

const NAMESPACE: &str = "kubemux";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// A simulator with the namespace the manifests go into: as on a real API server, a dry run
/// of objects in a namespace that does not exist fails, so it is created first, for real.
async fn server() -> (Sim, Kubectl) {
    let sim = Sim::start(SimConfig::default()).await.expect("the simulator starts");
    let kubectl = Kubectl::for_server(&sim.url());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}).to_string();
    kubectl.ok(&["apply", "-f", "-"], Some(namespace.as_bytes())).await;
    (sim, kubectl)
}

/// `kubectl kustomize DIR | kubectl apply --dry-run=server -f -`: the objects as the server
/// answered them, each checked to have been a dry run.
async fn dry_run(kubectl: &Kubectl, dir: &Path) -> Vec<Value> {
    let rendered = kubectl.ok(&["kustomize", &dir.to_string_lossy()], None).await;
    let applied = kubectl.ok(&["apply", "--dry-run=server", "-o", "json", "-f", "-"], Some(rendered.as_bytes())).await;
    let answer: Value = serde_json::from_str(&applied).expect("kubectl prints JSON");
    let items = answer["items"].as_array().cloned().unwrap_or_else(|| panic!("no List from kubectl: {answer}"));
    for item in &items {
        // The server's answer (it sets a uid) that stored nothing (so it gave no version).
        assert!(item["metadata"]["uid"].is_string(), "not answered by the server: {item}");
        assert!(item["metadata"]["resourceVersion"].is_null(), "stored, not a dry run: {item}");
    }
    items
}

fn kinds_and_names(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(|item| format!("{}/{}", item["kind"].as_str().unwrap_or("?"), item["metadata"]["name"].as_str().unwrap_or("?"))).collect()
}

fn the<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    items.iter().find(|item| item["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {:?}", kinds_and_names(items)))
}

/// The proxy's own reading of the ConfigMap's config.yaml: what the pods will run with.
fn proxy_config(items: &[Value]) -> config::FileConfig {
    let text = the(items, "ConfigMap")["data"]["config.yaml"].as_str().expect("a config.yaml key in the ConfigMap");
    config::parse(Path::new("/etc/kubemux/config.yaml"), text).unwrap_or_else(|e| panic!("the proxy refuses the ConfigMap's config: {e}"))
}

/// What both the base and the overlay must give a Deployment of the proxy.
fn check_deployment(items: &[Value]) {
    let deployment = the(items, "Deployment");
    let namespace = deployment["metadata"]["namespace"].as_str().expect("a namespace");
    assert_eq!(namespace, NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels, "the Deployment selects its own pods");
    assert_eq!(&the(items, "Service")["spec"]["selector"], labels, "the Service selects the proxy's pods");
    let budget = &the(items, "PodDisruptionBudget")["spec"];
    assert_eq!(budget["minAvailable"], 1);
    assert_eq!(&budget["selector"]["matchLabels"], labels, "the budget covers the proxy's pods");

    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let containers = spec["containers"].as_array().expect("containers");
    let [proxy] = containers.as_slice() else { panic!("one container expected: {containers:?}") };
    let security = &proxy["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(proxy["resources"]["requests"]["memory"].is_string() && proxy["resources"]["limits"]["memory"].is_string(), "{proxy}");
    assert_eq!(proxy["args"], json!(["--config", "/etc/kubemux/config.yaml"]));

    // The config folder is the ConfigMap, mounted whole: its ..data symlink swap is what the
    // proxy reloads on; a subPath mount never sees an update.
    let mounts = proxy["volumeMounts"].as_array().expect("volume mounts");
    let mount = mounts.iter().find(|m| m["mountPath"] == "/etc/kubemux").unwrap_or_else(|| panic!("nothing at /etc/kubemux: {mounts:?}"));
    assert!(mount["subPath"].is_null() && mount["subPathExpr"].is_null(), "the config is mounted with a subPath: {mount}");
    let volumes = spec["volumes"].as_array().expect("volumes");
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).expect("the mounted volume");
    // A fixed name: an edit then updates the ConfigMap in place and reloads the proxies; a
    // hashed generator name would roll every pod instead.
    assert_eq!(the(items, "ConfigMap")["metadata"]["name"], "kubemux-proxy-config");
    assert_eq!(volume["configMap"]["name"], the(items, "ConfigMap")["metadata"]["name"], "the mount is the proxy's ConfigMap");

    // The kubelet kills the pod when the grace period ends: terminals must get their
    // terminalGrace within it, with time left to close connections.
    let grace = spec["terminationGracePeriodSeconds"].as_f64().expect("terminationGracePeriodSeconds");
    let config = proxy_config(items);
    let terminal_grace = config.terminal_grace.expect("terminalGrace set in the ConfigMap").as_secs_f64();
    let drain = config.drain_period.expect("drainPeriod set in the ConfigMap").as_secs_f64();
    assert!(drain + terminal_grace < grace, "drainPeriod {drain} s + terminalGrace {terminal_grace} s do not fit in the pod's {grace} s grace period");

    let account = spec["serviceAccountName"].as_str().expect("a service account");
    assert!(items.iter().any(|item| item["kind"] == "ServiceAccount" && item["metadata"]["name"] == account), "no ServiceAccount {account}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn the_base_applies_in_proxy_mode_with_its_rbac() {
    let (_sim, kubectl) = server().await;
    let items = dry_run(&kubectl, &deploy_dir()).await;
    let expected = ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"];
    assert_eq!(kinds_and_names(&items), expected.iter().map(|kind| format!("{kind}/kubemux-proxy{}", if *kind == "ConfigMap" { "-config" } else { "" })).collect());
    check_deployment(&items);

    let config = proxy_config(&items);
    assert_eq!(config.auth_mode, Some(AuthMode::Proxy));
    // The proxy refuses proxy mode off loopback without this: the pod would crash-loop.
    assert_eq!(config.allow_anonymous_remote, Some(true));
    assert!(config.listen.is_some_and(|addr| addr.ip().is_unspecified()), "the probes and the Service need every interface: {:?}", config.listen);

    let binding = the(&items, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], the(&items, "ClusterRole")["metadata"]["name"]);
    let account = &the(&items, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"];
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]));
    // Read-only but for terminals: no rule may change an object.
    for rule in the(&items, "ClusterRole")["rules"].as_array().expect("rules") {
        let terminal = rule["resources"].as_array().is_some_and(|r| r.iter().all(|r| r.as_str().is_some_and(|r| ["pods/exec", "pods/attach", "pods/portforward"].contains(&r))));
        let allowed: &[&str] = if terminal { &["create", "get"] } else { &["get", "list", "watch"] };
        let verbs = rule["verbs"].as_array().expect("verbs");
        assert!(verbs.iter().all(|v| v.as_str().is_some_and(|v| allowed.contains(&v))), "rule grants more than {allowed:?}: {rule}");
        assert!(!rule["resources"].as_array().expect("resources").iter().any(|r| r == "secrets"), "secrets are readable: {rule}");
    }

    // Dry runs stored nothing.
    let stored = kubectl.ok(&["get", "deployments,services,configmaps", "--namespace", NAMESPACE, "-o", "name"], None).await;
    assert_eq!(stored.trim(), "", "a dry run stored objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn the_example_overlay_applies_in_token_mode_without_a_binding() {
    let (_sim, kubectl) = server().await;
    let items = dry_run(&kubectl, &deploy_dir().join("overlays/example")).await;
    check_deployment(&items);
    let kinds = kinds_and_names(&items);
    assert!(!kinds.iter().any(|k| k.starts_with("ClusterRoleBinding/") || k.starts_with("RoleBinding/")), "token mode grants the proxy nothing: {kinds:?}");
    let config = proxy_config(&items);
    assert_eq!(config.auth_mode, Some(AuthMode::Token));
    let image = the(&items, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_owned();
    assert!(!image.starts_with("localhost/"), "the overlay names a registry's image: {image}");
}
