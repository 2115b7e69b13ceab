//! The forward manager (`forwards:` in the config file), end to end: a real config file, the
//! proxy in-process, kube-sim's pods (echo servers on their container ports) behind real
//! local TCP listeners. Each test asserts what a user of a port-forward tool cares about:
//! bytes arrive intact, a restart or a rollout costs no connection, a forbidden forward says so
//! at once instead of hanging, a reload leaves kept forwards' connections alone and refuses a
//! port that is taken.

mod forwards_support;

use forwards_support::*;
use std::time::Duration;

use kube_sim::User;
use kubemux_proxy::forward::worker::{Reason, State};
use kubemux_proxy::live::Outcome;
use kubemux_testkit::sim::{hook, sim_client};
use kubemux_testkit::wait::{changed_until, within, within_for};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_forward_carries_many_connections_intact_both_ways() {
    let sim = sim(vec![]).await;
    let dir = folder("service", &sim, None);
    // service/web's port 80 maps to the pods' container port 80 (named p80 on the service).
    write_config(&dir, &forward("web", "demo", "service/web", "p80", 0));
    let proxy = start(&dir).await;
    let status = active(&proxy, "web").await;
    let pod = status.pod.clone().expect("a pod is picked");
    assert!(pod.starts_with("web-"), "{pod}");
    let port = status.local.expect("bound").port();
    // 24 connections at once, each 256 KiB both ways.
    let size = 256 * 1024;
    let results = within_for(
        Duration::from_secs(60),
        "24 echoes",
        futures::future::join_all((0..24u8).map(|i| {
            let payload = pattern(size, i);
            async move { echo(port, &payload).await }
        })),
    )
    .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let listed = forwards_json(&proxy);
    let web = &listed[0];
    assert_eq!((web["name"].as_str(), web["state"].as_str(), web["target"].as_str(), web["pod"].as_str()), (Some("web"), Some("Active"), Some("service/web"), Some(pod.as_str())));
    assert!(web["bytesIn"].as_u64() >= Some(24 * size as u64) && web["bytesOut"].as_u64() >= Some(24 * size as u64), "{web}");
    assert_eq!(web["localPort"].as_u64(), Some(u64::from(port)));
    let metrics = proxy.app().metrics.render();
    assert!(metrics.contains("kubemux_forward_state{forward=\"web\",state=\"Active\"} 1"), "{metrics}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pod_restarts_cost_no_connection() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let dir = folder("restarts", &sim, None);
    // deployment/hello: one replica, container port 8000.
    write_config(&dir, &forward("hello", "default", "deployment/hello", "8000", 0));
    let proxy = start(&dir).await;
    let first = active(&proxy, "hello").await;
    let port = first.local.expect("bound").port();
    let clients = Clients::start(port);
    let mut pod = first.pod.clone().expect("a pod");
    let mut pods = vec![pod.clone()];
    for restart in 1..=20 {
        // A graceful restart, as `kubectl delete pod` or a node drain does: the old pod turns
        // terminating (not Ready) and lives on for its grace period; its replacement is made.
        let replacement = hook(&api, "POST", &format!("/_sim/pods/default/{pod}/restart?gracePeriodSeconds=1")).await;
        let next = replacement["metadata"]["name"].as_str().expect("the replacement's name").to_owned();
        let status = status_until(&proxy, "hello", &format!("restart {restart}: the forward on {next}"), |s| s.pod.as_deref() == Some(next.as_str()) && s.state == State::Active).await;
        assert_eq!(status.reason, None);
        pod = next;
        pods.push(pod.clone());
        // Connections reach the new pod before the next restart.
        clients.more(3, "connections through the new pod").await;
    }
    let done = clients.finish().await;
    assert_eq!(pods.len(), 21, "{pods:?}");
    assert!(done >= 60, "{done}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_forward_fails_at_once_and_says_why() {
    let users = ["admin:admin-token:*", "viewer:viewer-token:default"].map(|u| User::parse(u).unwrap()).to_vec();
    let sim = sim(users).await;
    let dir = folder("forbidden", &sim, Some("viewer-token"));
    write_config(&dir, &forward("web", "demo", "service/web", "80", 0));
    let proxy = start(&dir).await;
    let status = status_until(&proxy, "web", "the forward Failed", |s| s.state == State::Failed).await;
    assert_eq!(status.reason, Some(Reason::Forbidden), "{status:?}");
    assert!(status.message.as_deref().is_some_and(|m| m.contains("demo")), "{status:?}");
    // A connection is closed at once, not held for the connect timeout (30 s).
    let mut socket = TcpStream::connect(("127.0.0.1", status.local.expect("bound").port())).await.unwrap();
    let mut buffer = [0u8; 1];
    let read = within_for(Duration::from_secs(5), "the forbidden forward closing its connection", socket.read(&mut buffer)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_a_forbidden_forward_is_refused_whole_with_every_reason() {
    // The proxy's credentials may use namespace default only.
    let users = ["admin:admin-token:*", "viewer:viewer-token:default"].map(|u| User::parse(u).unwrap()).to_vec();
    let sim = sim(users).await;
    let dir = folder("reload-forbidden", &sim, Some("viewer-token"));
    let allowed = forward("allowed", "default", "deployment/hello", "8000", 0);
    write_config(&dir, &allowed);
    let proxy = start(&dir).await;
    let port = active(&proxy, "allowed").await.local.expect("bound").port();
    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    exchange(&mut held, b"before").await;
    // One forward in a namespace the credentials may not use, one on a port another process
    // holds: both reasons, nothing applied. A dry run says the same.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    write_config(&dir, &format!("{allowed}{}{}", forward("denied", "demo", "service/web", "80", 0), forward("squat", "default", "deployment/hello", "8000", taken)));
    let check = proxy.app().live.check().await;
    assert_eq!(check["valid"], false, "{check}");
    let outcome = within("a reload", proxy.app().live.reload()).await;
    let Outcome::Rejected(message) = &outcome else { panic!("{outcome:?}") };
    for wanted in [format!("forwards[2].localPort: cannot listen on 127.0.0.1:{taken}"), "forwards[1]: forbidden: the credentials for cluster sim may not, in namespace demo:".to_owned()] {
        assert!(message.contains(&wanted), "{wanted:?} in {message}");
        assert!(check["error"].as_str().is_some_and(|e| e.contains(&wanted)), "{wanted:?} in {check}");
    }
    for permission in ["list pods", "watch pods", "create pods/portforward", "watch services"] {
        assert!(message.contains(permission), "{permission} in {message}");
    }
    let names: Vec<String> = forwards_json(&proxy).iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, ["allowed"], "the forwards in force stay");
    exchange(&mut held, b"after the refused reload").await;
    // A forbidden forward alone is refused as well; the reload goes through once it is gone.
    write_config(&dir, &format!("{allowed}{}", forward("denied", "demo", "service/web", "80", 0)));
    assert!(matches!(within("a reload", proxy.app().live.reload()).await, Outcome::Rejected(_)));
    write_config(&dir, &format!("{allowed}{}", forward("added", "default", "deployment/hello", "8000", 0)));
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(&outcome, Outcome::Applied { forwards, .. } if forwards.added == ["added"]) || outcome == Outcome::Unchanged, "{outcome:?}");
    assert_eq!(proxy.app().live.status()["forwardsUnchecked"], serde_json::json!([]), "the cluster answered");
    drop(squatter);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_answer_the_access_reviews_does_not_hold_up_the_reload() {
    let sim = sim(vec![]).await;
    let dir = folder("reload-mute", &sim, None);
    // An API server that takes connections and never answers.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_cluster = format!("  - name: mute\n    server: http://{}\n", mute.local_addr().unwrap());
    write_config_with(&dir, &mute_cluster, "");
    let proxy = start(&dir).await;
    let quiet = format!("{}    preflightTimeout: 0.3\n", forward("quiet", "demo", "pod/redis-0", "6379", 0).replace("cluster: sim", "cluster: mute"));
    let answered = forward("answered", "demo", "pod/redis-0", "6379", 0);
    write_config_with(&dir, &mute_cluster, &format!("{quiet}{answered}"));
    let check = proxy.app().live.check().await;
    assert_eq!((&check["valid"], &check["forwardsUnchecked"]), (&serde_json::json!(true), &serde_json::json!(["quiet"])), "{check}");
    // Applied well before the default timeout (5 s) would even have run out.
    let started = std::time::Instant::now();
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(&outcome, Outcome::Applied { .. }) || outcome == Outcome::Unchanged, "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let names: Vec<String> = forwards_json(&proxy).iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, ["answered", "quiet"]);
    echo(active(&proxy, "answered").await.local.expect("bound").port(), b"works").await.unwrap();
    assert_eq!(proxy.app().live.status()["forwardsUnchecked"], serde_json::json!(["quiet"]), "{}", proxy.app().live.status());
    drop(mute);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_pod_waits_and_the_refusing_app_degrades() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let dir = folder("waits", &sim, None);
    write_config(&dir, &forward("later", "demo", "app=later", "80", 0));
    let proxy = start(&dir).await;
    let status = status_until(&proxy, "later", "no Ready pod", |s| s.reason == Some(Reason::NoReadyPod)).await;
    assert_eq!(status.state, State::Reconnecting);
    let port = status.local.expect("bound").port();
    // A connection made now waits for a pod instead of failing.
    let waiting = tokio::spawn(async move { echo(port, b"made before the pod").await });
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "later-0", "labels": {"app": "later"}}, "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
    let request = http::Request::post("/api/v1/namespaces/demo/pods").header("content-type", "application/json").body(pod.to_string().into_bytes()).unwrap();
    api.request_text(request).await.unwrap();
    let status = active(&proxy, "later").await;
    assert_eq!(status.pod.as_deref(), Some("later-0"));
    within("the waiting connection's echo", waiting).await.unwrap().unwrap();

    // The app refuses (the kubelet's error channel): the connection ends, the forward says
    // Degraded with the reason, and the next connection after the app is back works.
    hook(&api, "POST", "/_sim/portforward/refuse?port=80").await;
    let refused = echo(port, b"refused").await;
    assert!(refused.is_err(), "{refused:?}");
    let status = status_until(&proxy, "later", "Degraded: target refused", |s| s.state == State::Degraded).await;
    assert_eq!(status.reason, Some(Reason::TargetRefused));
    hook(&api, "DELETE", "/_sim/portforward/refuse").await;
    echo(port, b"back").await.unwrap();
    active(&proxy, "later").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_add_remove_and_refuse_a_taken_port_whole() {
    let sim = sim(vec![]).await;
    let dir = folder("reload", &sim, None);
    let (kept_port, removed_port) = (free_port(), free_port());
    let kept = forward("kept", "demo", "service/web", "80", kept_port);
    write_config(&dir, &format!("{kept}{}", forward("removed", "demo", "deployment/api", "8080", removed_port)));
    let proxy = start(&dir).await;
    active(&proxy, "kept").await;
    active(&proxy, "removed").await;
    // A long-lived connection through the kept forward.
    let mut held = TcpStream::connect(("127.0.0.1", kept_port)).await.unwrap();
    exchange(&mut held, b"before").await;

    // A dry run says what a change would do and changes nothing.
    write_config(&dir, &format!("{kept}{}", forward("added", "demo", "pod/redis-0", "6379", 0)));
    let check = proxy.app().live.check().await;
    assert_eq!(check["valid"], true, "{check}");
    assert_eq!((check["forwards"]["added"][0].as_str(), check["forwards"]["removed"][0].as_str()), (Some("added"), Some("removed")), "{check}");
    // Keep one, remove one, add one. (The file watch may have applied it already.)
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(
        matches!(&outcome, Outcome::Applied { forwards, .. } if forwards.added == ["added"] && forwards.removed == ["removed"] && forwards.changed.is_empty()) || outcome == Outcome::Unchanged,
        "{outcome:?}"
    );
    let names: Vec<String> = forwards_json(&proxy).iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, ["added", "kept"]);
    exchange(&mut held, b"after a reload that kept it").await;
    assert!(TcpStream::connect(("127.0.0.1", removed_port)).await.is_err(), "the removed forward's port is closed");
    let added = active(&proxy, "added").await;
    echo(added.local.expect("bound").port(), b"redis").await.unwrap();

    // A new forward on a kept forward's port: refused, naming both places in the file.
    write_config(&dir, &format!("{kept}{}", forward("clash", "demo", "service/web", "80", kept_port)));
    let outcome = within("a reload", proxy.app().live.reload()).await;
    let Outcome::Rejected(message) = &outcome else { panic!("{outcome:?}") };
    assert!(message.contains(&format!("proxy.yaml:18:16: forwards[1].localPort: 127.0.0.1:{kept_port} is forward \"kept\"'s too (line 10 column 16)")), "{message}");
    // Two ports taken by other processes: the reload is refused with both reasons, and
    // everything in force stays.
    let squatters = [std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap()];
    let [one, two] = [0, 1].map(|i| squatters[i].local_addr().unwrap().port());
    write_config(&dir, &format!("{kept}{}{}", forward("squat-1", "demo", "service/web", "80", one), forward("squat-2", "demo", "service/web", "80", two)));
    let outcome = within("a reload", proxy.app().live.reload()).await;
    let Outcome::Rejected(message) = &outcome else { panic!("{outcome:?}") };
    for (index, port) in [(1, one), (2, two)] {
        assert!(message.contains(&format!("proxy.yaml:{}:5: forwards[{index}].localPort: cannot listen on 127.0.0.1:{port}", 2 + 8 * index + 3)), "{message}");
    }
    exchange(&mut held, b"after a refused reload").await;
    assert_eq!(forwards_json(&proxy).len(), 2);
    let status = proxy.app().live.status();
    assert!(status["lastError"]["message"].as_str().is_some_and(|m| m.contains("squat-") || m.contains("forwards[2]")), "{status}");

    // To no forwards and back: the held connection ends with its forward; a new one works.
    write_config(&dir, "");
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged), "{outcome:?}");
    assert!(forwards_json(&proxy).is_empty());
    closed(&mut held, "the removed forward's connection to end").await;
    write_config(&dir, &kept);
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged), "{outcome:?}");
    active(&proxy, "kept").await;
    echo(kept_port, b"back again").await.unwrap();
    drop(squatters);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_costs_no_connection() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::wait::{await_condition, conditions};

    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let deployments: Api<Deployment> = Api::namespaced(api.clone(), "demo");
    let pods: Api<Pod> = Api::namespaced(api.clone(), "demo");
    // Two replicas, a one-second termination grace: old pods serve their open connections
    // while the rollout replaces them.
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "echo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "echo"}}, "template": {
            "metadata": {"labels": {"app": "echo"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "echo", "image": "echo:1", "ports": [{"containerPort": 7000}]}]}
        }}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let dir = folder("rollout", &sim, None);
    write_config(&dir, &forward("echo", "demo", "deployment/echo", "7000", 0));
    let proxy = start(&dir).await;
    let first = active(&proxy, "echo").await;
    let port = first.local.expect("bound").port();
    let old: Vec<Pod> = pods.list(&ListParams::default().labels("app=echo")).await.unwrap().items;
    assert_eq!(old.len(), 2);

    let clients = Clients::start(port);
    clients.more(10, "connections before the rollout").await;
    // `kubectl rollout restart`: a template annotation changes, the controller rolls.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-02T00:00:00Z"}}}}});
    deployments.patch("echo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let old_names: Vec<String> = old.iter().filter_map(|p| p.metadata.name.clone()).collect();
    status_until(&proxy, "echo", "the forward on a pod of the new template", |s| s.state == State::Active && s.pod.as_ref().is_some_and(|p| !old_names.contains(p))).await;
    for pod in &old {
        let (name, uid) = (pod.metadata.name.clone().unwrap(), pod.metadata.uid.clone().unwrap());
        within_for(Duration::from_secs(30), &format!("old pod {name} to go"), await_condition(pods.clone(), &name, conditions::is_deleted(&uid))).await.unwrap();
    }
    clients.more(10, "connections after the rollout").await;
    assert!(clients.finish().await >= 20);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_tunnel_is_noticed_within_the_ping_timeout() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let dir = folder("blackhole", &sim, None);
    write_config(&dir, &format!("{}    keepaliveInterval: 0.3\n", forward("redis", "demo", "pod/redis-0", "6379", 0)));
    let proxy = start(&dir).await;
    let port = active(&proxy, "redis").await.local.expect("bound").port();
    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    exchange(&mut held, b"alive").await;
    // The tunnel goes silent (open, but nothing read or written, no pong): the forward says
    // so and closes the connection, instead of leaving it hanging.
    let blackholed = hook(&api, "POST", "/_sim/portforward/blackhole?pod=redis-0").await;
    assert_eq!(blackholed["blackholed"], 1, "{blackholed}");
    let status = status_until(&proxy, "redis", "Degraded: tunnel silent", |s| s.state == State::Degraded).await;
    assert_eq!(status.reason, Some(Reason::TunnelSilent), "{status:?}");
    closed(&mut held, "the silent tunnel's connection to close").await;
    // A new connection gets a new tunnel, and the forward is Active again.
    echo(port, b"a new tunnel").await.unwrap();
    active(&proxy, "redis").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_outlives_the_idle_cut() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    let dir = folder("idle", &sim, None);
    // The same pod through two forwards: one pings its tunnels, one never does.
    let pinged = format!("{}    keepaliveInterval: 0.2\n", forward("pinged", "demo", "pod/redis-0", "6379", 0));
    let unpinged = format!("{}    keepaliveInterval: 0\n", forward("unpinged", "demo", "pod/redis-0", "6379", 0));
    write_config(&dir, &format!("{pinged}{unpinged}"));
    let proxy = start(&dir).await;
    let pinged_port = active(&proxy, "pinged").await.local.expect("bound").port();
    let unpinged_port = active(&proxy, "unpinged").await.local.expect("bound").port();
    // Streams idle for 1 s are cut, as load balancers and kubelets do.
    hook(&api, "POST", "/_sim/portforward/idle-timeout?seconds=1").await;
    let mut kept = TcpStream::connect(("127.0.0.1", pinged_port)).await.unwrap();
    let mut cut = TcpStream::connect(("127.0.0.1", unpinged_port)).await.unwrap();
    exchange(&mut kept, b"start").await;
    exchange(&mut cut, b"start").await;
    // The unpinged connection is cut for idling; the pinged one, idle as long, still works.
    closed(&mut cut, "the unpinged connection to be cut for idling").await;
    exchange(&mut kept, b"still here").await;
    hook(&api, "POST", "/_sim/portforward/idle-timeout?seconds=0").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_restarts_a_stuck_worker_even_after_a_reload_to_none() {
    let sim = sim(vec![]).await;
    let dir = folder("watchdog", &sim, None);
    let redis = forward("redis", "demo", "pod/redis-0", "6379", 0);
    write_config(&dir, "");
    let proxy = start(&dir).await;
    proxy.app().forwards.set_watchdog_timeout(Duration::from_millis(1500));
    // The watchdog outlives a configuration with no forwards at all.
    write_config(&dir, &redis);
    let outcome = within("a reload", proxy.app().live.reload()).await;
    assert!(matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged), "{outcome:?}");
    let port = active(&proxy, "redis").await.local.expect("bound").port();
    echo(port, b"before").await.unwrap();
    // The worker stops making progress: it accepts nothing more.
    let mut status = proxy.app().forwards.status("redis").unwrap();
    let stalled_at = status.borrow().since;
    proxy.app().forwards.inject_stall("redis");
    // The watchdog replaces it on the same listener: a new worker, Active again (since after
    // the stall: it went through Starting).
    changed_until(&mut status, Duration::from_secs(15), "the restarted worker Active", |s| s.state == State::Active && s.since > stalled_at).await;
    assert_eq!(status.borrow().local.map(|a| a.port()), Some(port), "the same local port");
    echo(port, b"after the restart").await.unwrap();
    let metrics = proxy.app().metrics.render();
    assert!(metrics.contains("kubemux_forward_restarts_total{forward=\"redis\"} 1"), "{metrics}");
    proxy.shutdown().await;
}
