//! kube-sim over HTTPS (`SimConfig::tls`, `--tls`) through kube-rs (rustls): the kubeconfig the
//! simulator writes is all a client needs (its `certificate-authority-data` is the generated
//! CA), a list, a watch and an exec (a WebSocket upgrade) work over TLS, and a client that does
//! not trust the CA, or dials a name the certificate does not hold, is refused by certificate
//! verification. kubectl over TLS is `kubectl_tls.rs`.

mod common;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, AttachParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use common::within;

/// A client from `kubeconfig` (YAML), or kube's refusal to build one.
async fn client_of(kubeconfig: &str) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("the kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube accepts the kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

/// Every message in `error`'s chain, joined: kube wraps the TLS failure a few levels deep.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[tokio::test]
async fn kube_lists_watches_and_execs_over_tls_with_the_written_kubeconfig() {
    let sim = common::start_tls().await;
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    let kubeconfig = sim.kubeconfig();
    assert!(
        !kubeconfig.contains("insecure-skip-tls-verify"),
        "{kubeconfig}"
    );
    let client = client_of(&kubeconfig).await;

    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list pods over TLS");
    let mut listed: Vec<String> = pods
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    listed.sort();
    assert_eq!(listed, common::all_pods(&sim));

    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "demo");
    let rv = config_maps
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list RV");
    let mut events = config_maps
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch starts")
        .boxed();
    let created = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("over-tls".to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &created)
        .await
        .expect("create");
    let event = within("the ADDED event over TLS", events.try_next())
        .await
        .expect("watch stream healthy")
        .expect("an event");
    assert!(
        matches!(&event, WatchEvent::Added(cm) if cm.name_any() == "over-tls"),
        "{event:?}"
    );

    // exec is a WebSocket upgrade: HTTP/1.1 inside the TLS connection.
    let params = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(false);
    let mut process = within(
        "exec over TLS",
        Api::<Pod>::namespaced(client, "default").exec("toolbox", ["echo", "through tls"], &params),
    )
    .await
    .expect("exec starts");
    let mut out = String::new();
    within(
        "exec's stdout",
        process
            .stdout()
            .expect("stdout requested")
            .read_to_string(&mut out),
    )
    .await
    .expect("read stdout");
    assert_eq!(out, "through tls\n");
    within("the exec to end", process.join())
        .await
        .expect("a clean end");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_or_dialing_another_name_is_refused() {
    let sim = common::start_tls().await;
    let ca_data = sim
        .kubeconfig()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("certificate-authority-data: ")
                .map(str::to_owned)
        })
        .expect("the kubeconfig carries the CA");

    // No CA: kube falls back to the system's roots, none of which signed the simulator's.
    let without_ca = sim
        .kubeconfig()
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .collect::<Vec<_>>()
        .join("\n");
    let refused = Api::<Pod>::all(client_of(&without_ca).await)
        .list(&ListParams::default())
        .await
        .expect_err("a client that does not trust the CA is refused");
    let text = chain(&refused);
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "refused for another reason: {text}"
    );

    // The right CA, an address the certificate does not hold: the IPv4-mapped IPv6 form of
    // 127.0.0.1 reaches the same listener, but is another name to certificate verification.
    let port = sim.addr().port();
    let wrong_name = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://[::ffff:127.0.0.1]:{port}\n    certificate-authority-data: {ca_data}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
    );
    let refused = Api::<Pod>::all(client_of(&wrong_name).await)
        .list(&ListParams::default())
        .await
        .expect_err("a client dialing a name the certificate lacks is refused");
    let text = chain(&refused);
    assert!(
        text.contains("certificate not valid for name \"::ffff:127.0.0.1\""),
        "refused for another reason: {text}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_binary_writes_the_ca_next_to_a_kubeconfig_that_trusts_it() {
    let dir = tempfile::Builder::new()
        .prefix("kube-sim-tls-")
        .tempdir()
        .expect("a temporary directory");
    let kubeconfig_path = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--tls")
        .arg("--write-kubeconfig")
        .arg(&kubeconfig_path)
        .args(["--user", "root:root-token:*"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = within("kube-sim's listening line", lines.next_line())
        .await
        .expect("read kube-sim's stdout")
        .expect("a line");
    assert!(
        line.starts_with("kube-sim listening on https://127.0.0.1:"),
        "{line}"
    );

    // Both files exist before the line is printed.
    let kubeconfig = std::fs::read_to_string(&kubeconfig_path).expect("the kubeconfig was written");
    let ca = std::fs::read_to_string(dir.path().join("kubeconfig.ca.crt"))
        .expect("the CA was written next to the kubeconfig");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let parsed = Kubeconfig::from_yaml(&kubeconfig).expect("the kubeconfig parses");
    let cluster = parsed.clusters[0].cluster.as_ref().expect("a cluster");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(
            cluster
                .certificate_authority_data
                .as_deref()
                .expect("CA data"),
        )
        .expect("base64");
    assert_eq!(
        String::from_utf8_lossy(&data),
        ca,
        "the kubeconfig trusts the CA written beside it"
    );

    let namespaces =
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client_of(&kubeconfig).await)
            .list(&ListParams::default())
            .await
            .expect("list namespaces over TLS as root");
    assert!(
        namespaces.items.iter().any(|n| n.name_any() == "demo"),
        "{:?}",
        namespaces
            .items
            .iter()
            .map(|n| n.name_any())
            .collect::<Vec<_>>()
    );
    child.start_kill().expect("stop kube-sim");
    let _ = child.wait().await;
}
