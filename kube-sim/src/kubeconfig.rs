//! The kubeconfig that points kubectl, kube-rs and the proxy at a running simulator.

use std::fmt::Write as _;

use base64::Engine as _;
use std::sync::Arc;

use crate::auth::User;

/// The cluster, context and user name used in the kubeconfig.
pub const NAME: &str = "kube-sim";

/// The token of an HTTPS simulator's kubeconfig when it has no users (see [`render`]).
pub const ANONYMOUS_TOKEN: &str = "kube-sim-anonymous";

/// Renders a kubeconfig (YAML) with one cluster, context and user, all named `kube-sim`, the
/// context's namespace `default`, and `current-context: kube-sim`.
///
/// A plain-HTTP server gets `insecure-skip-tls-verify: true`: client-node refuses an `http://`
/// cluster without it, and kubectl, kube-rs and the Python client accept it (there is no
/// certificate to verify). An HTTPS server gets its CA (`ca_pem`, PEM) as
/// `certificate-authority-data`, so clients verify its certificate as they verify a cluster's.
///
/// With no users configured the simulator admits every request, so the user carries no
/// credentials over plain HTTP; over HTTPS it carries the token [`ANONYMOUS_TOKEN`], which the
/// simulator ignores as it ignores any, because kubectl asks for a username on its terminal (and
/// fails without one) when an HTTPS cluster's user has no credentials. Otherwise the user
/// carries the token of the first user with access to every namespace (`*`), or of the first
/// user when none has.
pub fn render(server_url: &str, ca_pem: Option<&str>, users: &[Arc<User>]) -> String {
    let user = users.iter().find(|u| u.is_admin()).or(users.first());
    let credentials = match user {
        Some(user) => format!("\n    token: {}", quote(&user.token)),
        None if server_url.starts_with("https://") => format!("\n    token: {}", quote(ANONYMOUS_TOKEN)),
        None => " {}".to_owned(),
    };
    let name = quote(NAME);
    let trust = match ca_pem {
        Some(pem) => format!("\n    certificate-authority-data: {}", base64::engine::general_purpose::STANDARD.encode(pem)),
        None if server_url.starts_with("http://") => "\n    insecure-skip-tls-verify: true".to_owned(),
        None => String::new(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}{trust}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
    namespace: default
current-context: {name}
preferences: {{}}
users:
- name: {name}
  user:{credentials}
",
        server = quote(server_url),
    )
}

/// A YAML double-quoted scalar. Only `"` and `\` need escaping in that style, but control
/// characters, the byte-order mark and the characters YAML 1.1 reads as line breaks are escaped
/// too, so that any token survives every YAML parser unchanged.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                // `\uXXXX` covers every such character: all are in the Basic Multilingual Plane.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use serde_json::{Value, json};

    use super::*;

    fn users(specs: &[&str]) -> Vec<Arc<User>> {
        specs.iter().map(|s| Arc::new(User::parse(s).unwrap())).collect()
    }

    /// Renders, parses back with kube's own kubeconfig reader and checks the server, context
    /// and the token it would send (`None`: anonymous).
    #[track_caller]
    fn check(server: &str, users: &[Arc<User>], expected_token: Option<&str>) {
        let yaml = render(server, None, users);
        let parsed = Kubeconfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        // Through JSON, because kube keeps tokens in a `SecretString` that only its serialiser opens.
        let config = serde_json::to_value(&parsed).unwrap();
        assert_eq!(config["current-context"], "kube-sim", "{yaml}");
        assert_eq!(config["clusters"][0]["name"], "kube-sim");
        assert_eq!(config["clusters"][0]["cluster"]["server"], server);
        let plain_http = server.starts_with("http://");
        assert_eq!(config["clusters"][0]["cluster"]["insecure-skip-tls-verify"].as_bool(), plain_http.then_some(true), "{yaml}");
        assert_eq!(
            config["contexts"][0],
            json!({"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"}})
        );
        assert_eq!(config["users"][0]["name"], "kube-sim");
        let token = config["users"][0]["user"].get("token").and_then(Value::as_str);
        assert_eq!(token, expected_token, "{yaml}");
    }

    #[test]
    fn anonymous_without_users() {
        check("http://127.0.0.1:6443", &[], None);
        check("https://127.0.0.1:6443", &[], Some(ANONYMOUS_TOKEN));
    }

    #[test]
    fn picks_the_first_admin_token_else_the_first_user() {
        check("http://127.0.0.1:1", &users(&["alice:a-tok:demo", "root:root-tok:*", "r2:r2:*"]), Some("root-tok"));
        check("http://127.0.0.1:1", &users(&["alice:a-tok:demo", "bob:b-tok:default"]), Some("a-tok"));
    }

    #[test]
    fn quotes_any_token() {
        let odd = [
            "plain",
            "with space and # comment",
            "\"quoted\" 'single' \\back\\slash",
            ": - ? [ ] { } , & * ! | > % @ `",
            "yes",
            "123",
            "null",
            "~",
            "tab\there",
            "ünïcödé \u{2028} \u{85} \u{feff}",
        ];
        for token in odd {
            let user = Arc::new(User { name: "u".to_owned(), token: token.to_owned(), namespaces: None });
            check("http://127.0.0.1:1", &[user], Some(token));
        }
    }

    #[tokio::test]
    async fn kube_client_config_accepts_it() {
        let yaml = render("http://127.0.0.1:8080", None, &users(&["root:t0k:*"]));
        let kubeconfig = Kubeconfig::from_yaml(&yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:8080/");
        assert_eq!(config.default_namespace, "default");
    }

    #[tokio::test]
    async fn an_https_server_comes_with_its_ca() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let yaml = render("https://127.0.0.1:6443", Some(pem), &users(&["root:t0k:*"]));
        let parsed = Kubeconfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.insecure_skip_tls_verify, None, "{yaml}");
        let data = cluster.certificate_authority_data.as_deref().unwrap_or_else(|| panic!("no certificate-authority-data:\n{yaml}"));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(data).unwrap(), pem.as_bytes());
    }
}
