//! The proxy against an API server it reaches over HTTPS with a CA and a token of its own, as
//! configured in a config file (`server`, `certificateAuthority`, `tokenFile`): kube-sim with
//! `--tls` (a generated CA) and users. The real binary checks the cluster's health through TLS
//! with the CA file and the token file, a `/mux` watch gets the snapshot and then a change, and
//! pass-through answers; the same server without the CA is unreachable (certificate
//! verification) and with another token unauthorized, so neither file is ignored.

use std::process::Stdio;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::tls::TlsConfig;
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_testkit::http;
use kubemux_testkit::sim::{list, same_objects};
use kubemux_testkit::wait::{DEADLINE, poll};
use kubemux_testkit::{proxy_binary, start_binary};
use serde_json::{Value, json};

const CONFIG_MAPS: &str = "/api/v1/namespaces/demo/configmaps";

/// A client of the simulator as its admin, trusting its CA: what its own kubeconfig gives.
async fn admin_client(sim: &Sim) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("the simulator's kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube accepts it");
    kube::Client::try_from(config).expect("a client")
}

/// Polls `/clusters` until every `(name, status)` of `expected` is listed with that status.
async fn clusters_are(base: &str, expected: &[(&str, &str)]) {
    poll(&format!("/clusters to say {expected:?}"), DEADLINE, || async {
        let answer = http::get(&format!("{base}/clusters")).await;
        let listed: Value = serde_json::from_str(&answer.body).map_err(|e| format!("{e}: {}", answer.body))?;
        let all = expected.iter().all(|(name, status)| listed.as_array().is_some_and(|clusters| clusters.iter().any(|c| c["name"] == *name && c["status"] == *status)));
        if all { Ok(()) } else { Err(answer.body) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_reaches_an_https_cluster_with_a_ca_file_and_a_token_file() {
    let users = ["proxy:proxy-token:*"].map(|u| User::parse(u).expect("a user")).to_vec();
    let sim = Sim::start(SimConfig { seed: Seed::Demo, users, tls: Some(TlsConfig::default()), ..SimConfig::default() }).await.expect("the simulator starts");
    let ca = sim.ca_pem().expect("a TLS simulator has a CA").to_owned();

    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("ca.crt"), &ca).expect("write the CA");
    // A newline at the end, as `echo` and Kubernetes' secrets write it.
    std::fs::write(dir.path().join("token"), "proxy-token\n").expect("write the token");
    std::fs::write(dir.path().join("other-token"), "not-a-user\n").expect("write the other token");
    let server = sim.url();
    let config = format!(
        "clusters:
  - name: secure
    server: {server}
    certificateAuthority: ca.crt
    tokenFile: token
  - name: no-ca
    server: {server}
    tokenFile: token
  - name: other-token
    server: {server}
    certificateAuthority: ca.crt
    tokenFile: other-token
"
    );
    let config_path = dir.path().join("proxy.yaml");
    std::fs::write(&config_path, config).expect("write the config");
    let (_proxy, addr) = start_binary(&proxy_binary(), &[std::ffi::OsStr::new("--config"), config_path.as_os_str()], "warn", Stdio::inherit()).await;
    let base = format!("http://{addr}");

    // The health check is a GET /version through each cluster's own TLS settings.
    clusters_are(&base, &[("secure", "ok"), ("no-ca", "unreachable"), ("other-token", "unauthorized")]).await;

    // A watch through /mux: the snapshot equals the simulator's list, then a change arrives.
    let admin = admin_client(&sim).await;
    let client = NativeClient::connect(&format!("ws://{addr}/mux"), fast_config(7));
    client.watch("cms", "secure", CONFIG_MAPS, None).await.expect("the watch is accepted");
    let view = client.wait_for(Duration::from_secs(10), "the snapshot over TLS", |v| v.synced.contains_key("cms")).await.expect("synced");
    same_objects(&view.caches["cms"], &list(&admin, CONFIG_MAPS).await).expect("the snapshot equals the simulator's list");

    let created = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "over-tls", "namespace": "demo"}, "data": {"k": "v"}});
    let request = ::http::Request::builder().method("POST").uri(CONFIG_MAPS).header("content-type", "application/json").body(serde_json::to_vec(&created).expect("JSON")).expect("a request");
    admin.request_text(request).await.expect("create a ConfigMap as the admin");
    let view = client.wait_for(Duration::from_secs(10), "the change over TLS", |v| v.caches.get("cms").is_some_and(|c| c.contains_key(&("demo".to_owned(), "over-tls".to_owned())))).await.expect("the new ConfigMap arrives");
    same_objects(&view.caches["cms"], &list(&admin, CONFIG_MAPS).await).expect("the cache equals the simulator's list after the change");
    assert!(view.resets.get("cms").is_none_or(|r| *r == 0), "no reset: {:?}", view.resets);

    // Pass-through uses the same TLS client and token.
    let passthrough = http::get(&format!("{base}/clusters/secure/api/v1/namespaces/demo/configmaps/over-tls")).await;
    assert_eq!(passthrough.status.as_u16(), 200, "{}", passthrough.body);
    let object: Value = serde_json::from_str(&passthrough.body).expect("JSON");
    assert_eq!(object["data"]["k"], "v", "{object}");
    sim.shutdown().await;
}
