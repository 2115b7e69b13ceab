//! A reload that removes a cluster runs the teardown of its terminals: each client is told why
//! (close 1001) and no shell, nor anything it started, is left in the container. A terminal on
//! a cluster the reload keeps is not touched.

mod terminal_support;

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{kubeconfig, sim_client};
use kubemux_proxy::clusters::ClusterSource;
use kubemux_proxy::live::{Candidate, Loader, Outcome};
use kubemux_proxy::{Proxy, ProxySettings};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use terminal_support::*;

/// The clusters a test says, each a name for the one simulator.
struct Names(Arc<Mutex<Vec<&'static str>>>, String);

impl Loader for Names {
    fn load(&self) -> Result<Candidate, String> {
        let sources = self.0.lock().unwrap().iter().map(|name| ClusterSource::Kubeconfig { name: (*name).to_owned(), kubeconfig: kubeconfig(&[(name, &self.1, None)]), context: None, file: None }).collect();
        Ok(Candidate { settings: ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }, sources })
    }
    fn file(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_cluster_tears_down_its_terminals_and_keeps_the_others() {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.unwrap();
    let sim_api = sim_client(&sim).await;
    let names = Arc::new(Mutex::new(vec!["gone", "kept"]));
    let proxy = Proxy::start_live(Box::new(Names(names.clone(), sim.url()))).await.unwrap();
    let open = |cluster: &'static str| {
        let addr = proxy.addr();
        async move {
            let (ws, _) = connect(addr, &format!("/clusters/{cluster}{TOOLBOX_SH}"), V5, &[]).await.expect("the upgrade");
            let mut term = Terminal::new(ws);
            term.resize(80, 24).await;
            let pid = term.shell_pid().await;
            term.enter(pid, ShellState::Sleeping).await;
            (term, pid)
        }
    };
    let (gone, gone_pid) = open("gone").await;
    let (mut kept, kept_pid) = open("kept").await;
    let members = session_members(gone_pid);

    *names.lock().unwrap() = vec!["kept"];
    let outcome = within("the reload", proxy.app().live.reload()).await;
    assert!(matches!(&outcome, Outcome::Applied { removed, .. } if removed == &["gone".to_owned()]), "{outcome:?}");
    let removed_at = Instant::now();
    let mut ws = gone.ws;
    let code = within("the removed cluster's terminal to close", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    let (code, reason) = code.expect("a close frame");
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("cluster removed"), "{reason}");
    assert_session_gone(&sim_api, gone_pid, &members, removed_at, "the removed cluster's shell").await;

    // The kept cluster's terminal still works, its shell alive.
    kept.type_text("\x03echo still-$((6*7))\r").await;
    kept.read_until("the kept terminal's answer", |text| text.contains("still-42").then_some(())).await;
    assert!(process_running(kept_pid), "the kept cluster's shell runs on");
    proxy.shutdown().await;
}
