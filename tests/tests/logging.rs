//! Invariant 7 at the log level an operator turns on while debugging: the real `kubemux-proxy`
//! at `RUST_LOG=trace` is sent a token in every way the protocol allows and a secret typed into
//! a terminal, and none of it is in its output or its metrics, in text, base64url or hex.

mod terminal_support;

use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{SinkExt as _, StreamExt as _};
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::{KubeconfigFile, kubeconfig, proxy_binary, start_binary};
use kubemux_testkit::http;
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::tungstenite::Message;

use terminal_support::*;

/// One token per way in, each its own kube-sim user, so every request is served.
const TOKENS: [(&str, &str); 5] = [
    ("viaheader", "tok-mux-header-7f3a9c"),
    ("viasubprotocol", "tok-mux-subprotocol-41d2e8"),
    ("viaframe", "tok-mux-auth-frame-9b7c11"),
    ("viapassthrough", "tok-pass-through-c03e5d"),
    ("viaexec", "tok-exec-header-58aa20"),
];
/// What the user types into the shell (a password, say).
const TYPED: &str = "hunter2-typed-secret-6e41";

/// Every form a secret could take in a log line: as sent, base64url (the subprotocol), base64
/// (channel framing) and hex (tungstenite's frame dumps, with and without spaces).
fn forms(secret: &str) -> Vec<String> {
    let hex: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.to_owned(),
        URL_SAFE_NO_PAD.encode(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        hex.concat(),
        hex.join(" "),
        hex.join(", "),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_log_at_trace() {
    let binary = tokio::task::spawn_blocking(proxy_binary).await.expect("the build ran");
    let users = TOKENS.iter().map(|(name, token)| User::parse(&format!("{name}:{token}:*")).expect("a user")).collect();
    let sim = Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.expect("the simulator starts");
    let kubeconfig = KubeconfigFile::new(&kubeconfig(&[("sim", &sim.url(), None)]));
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let stderr = Stdio::from(log.reopen().expect("the log file opens for writing"));
    let (mut child, addr) = start_binary(&binary, &["--kubeconfig".as_ref(), kubeconfig.path().as_os_str()], "trace", stderr).await;

    // /mux with the token in the Authorization header, then an `auth` frame with another.
    let header = format!("Bearer {}", TOKENS[0].1);
    let (mut mux, _) = connect(addr, "/mux", "kubemux.v1", &[("authorization", &header)]).await.expect("the /mux upgrade");
    let frame = format!(r#"{{"op":"auth","cluster":"sim","token":"{}"}}"#, TOKENS[2].1);
    mux.send(Message::Text(frame.into())).await.expect("send auth");
    mux.send(Message::Text(r#"{"op":"watch","id":"pods","cluster":"sim","path":"/api/v1/namespaces/demo/pods"}"#.into())).await.expect("send watch");
    within("the snapshot's synced", async {
        while let Some(message) = mux.next().await {
            if let Ok(Message::Text(text)) = message
                && text.contains(r#""op":"synced""#)
            {
                return;
            }
        }
        panic!("the /mux connection ended before synced");
    })
    .await;

    // /mux with the token as the browser's bearer subprotocol.
    let offered = format!("kubemux.v1, base64url.bearer.authorization.k8s.io.{}", URL_SAFE_NO_PAD.encode(TOKENS[1].1));
    let (mut browser, _) = connect(addr, "/mux", &offered, &[]).await.expect("the /mux upgrade with a token subprotocol");
    browser.send(Message::Text(r#"{"op":"ping","data":"x"}"#.into())).await.expect("send ping");
    within("the pong", browser.next()).await.expect("a pong").expect("a clean socket");

    // A pass-through request with its own token.
    let reply = http::request(http::Method::GET, &format!("http://{addr}/clusters/sim/api/v1/namespaces"), &[("authorization", &format!("Bearer {}", TOKENS[3].1))]).await;
    assert_eq!(reply.status, 200, "the pass-through request is served: {}", reply.body);

    // A terminal with its own token, and a secret typed into it.
    let exec_header = format!("Bearer {}", TOKENS[4].1);
    let (ws, _) = connect(addr, &format!("/clusters/sim{TOOLBOX_SH}"), V5, &[("authorization", &exec_header)]).await.expect("the exec upgrade");
    let mut term = Terminal::new(ws);
    term.resize(80, 24).await;
    term.type_text(&format!("echo {TYPED} | wc -c\r")).await;
    term.read_until("the shell's answer", |text| text.contains(&format!("{}", TYPED.len() + 1)).then_some(())).await;

    let metrics = http::get(&format!("http://{addr}/metrics")).await.body;
    drop((mux, browser, term));
    nix_sigterm(&child);
    within("the proxy to exit", child.wait()).await.expect("wait for the proxy");
    let mut logged = String::new();
    tokio::fs::File::open(log.path()).await.expect("the log").read_to_string(&mut logged).await.expect("read the log");

    // The run logged at trace (so the search below is not of an empty file).
    for line in ["upstream watch started", "terminal session open"] {
        assert!(logged.contains(line), "the proxy logged {line:?} at trace; log:\n{}", tail(&logged));
    }
    for secret in TOKENS.iter().map(|(_, token)| *token).chain([TYPED]) {
        for form in forms(secret) {
            assert!(!logged.contains(&form), "{secret} is in the log as {form:?}:\n{}", around(&logged, &form));
            assert!(!metrics.contains(&form), "{secret} is in /metrics as {form:?}");
        }
    }
    sim.shutdown().await;
}

fn nix_sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("the proxy is running");
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

fn tail(text: &str) -> String {
    text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn around(text: &str, needle: &str) -> String {
    text.lines().filter(|line| line.contains(needle)).take(5).collect::<Vec<_>>().join("\n")
}
