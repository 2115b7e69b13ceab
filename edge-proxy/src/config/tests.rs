use super::*;

const FILE: &str = "/etc/kubemux/proxy.yaml";

/// The error for `text`, with its position and key.
fn refusal(text: &str) -> (u64, u64, String, String) {
    match parse(Path::new(FILE), text) {
        Err(ConfigError::At { line, column, key, message, .. }) => {
            let shown = parse(Path::new(FILE), text).unwrap_err().to_string();
            assert!(shown.starts_with(&format!("{FILE}:{line}:{column}: ")), "{shown}");
            (line, column, key, message)
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("accepted: {text}"),
    }
}

/// A folder of its own under the temp dir, with a kubeconfig of two contexts.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubemux-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n\
        contexts: [{name: a, context: {cluster: c, user: u}}, {name: b, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n";
    std::fs::write(dir.join("kubeconfig"), kubeconfig).unwrap();
    dir
}

#[test]
fn an_unknown_key_is_named_with_its_position_and_the_valid_keys() {
    let (line, column, key, message) = refusal("listen: 127.0.0.1:8080\nlistne: 1\n");
    assert_eq!((line, key.as_str()), (2, "listne"));
    assert_eq!(column, 1);
    assert!(message.contains("listne") && message.contains("listen"), "{message}");
    let (line, _, key, message) = refusal("auth:\n  mode: token\n  allowAnonymus: true\n");
    assert_eq!((line, key.as_str()), (3, "allowAnonymus"));
    assert!(message.contains("allowAnonymousRemote"), "{message}");
}

#[test]
fn a_wrong_type_is_named_with_its_position() {
    let (line, column, key, message) = refusal("history: lots\n");
    assert_eq!((line, column, key.as_str()), (1, 10, "history"));
    assert!(message.contains("whole number"), "{message}");
    let (line, _, key, message) = refusal("auth:\n  mode: nobody\n");
    assert_eq!((line, key.as_str()), (2, "mode"));
    assert!(message.contains("token") && message.contains("proxy"), "{message}");
}

#[test]
fn durations_must_be_finite_and_not_negative() {
    for (text, key) in
        [("linger: -1\n", "linger"), ("terminalGrace: .nan\n", "terminalGrace"), ("upstreamIdleTimeout: .inf\n", "upstreamIdleTimeout"), ("terminalPingInterval: 1e300\n", "terminalPingInterval")]
    {
        let (line, column, got, message) = refusal(text);
        assert_eq!((line, got.as_str()), (1, key), "{text}");
        assert_eq!(column as usize, key.len() + 3, "{text}");
        assert!(message.contains("finite number of seconds, 0 or more"), "{message}");
    }
    assert_eq!(parse(Path::new(FILE), "terminalGrace: 0.5\n").unwrap().terminal_grace, Some(Duration::from_millis(500)));
    assert!(parse_seconds("-1").is_err() && parse_seconds("NaN").is_err() && parse_seconds("inf").is_err() && parse_seconds("x").is_err());
    assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
}

#[test]
fn a_malformed_address_is_refused() {
    let (line, column, key, message) = refusal("# proxy\nlisten: localhost\n");
    assert_eq!((line, column, key.as_str()), (2, 9, "listen"));
    assert!(message.contains("IP:PORT"), "{message}");
}

#[test]
fn forwards_parse_with_their_defaults() {
    let text = "forwards:\n  - name: web\n    cluster: demo\n    namespace: demo\n    target: service/web\n    port: http\n    localPort: 18080\n  - name: db\n    cluster: demo\n    target: app=db\n    port: 5432\n    localPort: 0\n    bind: '::1'\n    reconnectInitial: 0.5\n    reconnectMax: 4\n    connectTimeout: 3\n    preflightTimeout: 0.25\n";
    let forwards = parse(Path::new(FILE), text).unwrap().forwards.unwrap();
    let web = &forwards[0];
    assert_eq!(
        (web.name.as_str(), web.namespace.as_str(), &web.target, &web.port, web.local_addr()),
        ("web", "demo", &Target::Service("web".into()), &PortRef::Name("http".into()), "127.0.0.1:18080".parse().unwrap())
    );
    assert_eq!((web.reconnect_initial, web.reconnect_max, web.connect_timeout), (Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(30)));
    assert_eq!(web.origin.to_string(), format!("{FILE}:2:5: forwards[0]"));
    let db = &forwards[1];
    assert_eq!((db.namespace.as_str(), &db.target, db.local_addr()), ("default", &Target::Selector("app=db".into()), "[::1]:0".parse().unwrap()));
    assert_eq!((db.reconnect_initial, db.reconnect_max, db.connect_timeout), (Duration::from_millis(500), Duration::from_secs(4), Duration::from_secs(3)));
    assert_eq!((web.preflight_timeout, db.preflight_timeout), (Duration::from_secs(5), Duration::from_millis(250)));
}

#[test]
fn a_bad_forward_is_named_with_its_position() {
    let entry = |extra: &str| format!("forwards:\n  - name: web\n    cluster: demo\n    target: service/web\n    port: 80\n    localPort: 18080\n{extra}");
    let (line, _, key, message) = refusal("forwards:\n  - name: web\n    cluster: demo\n    port: 80\n    localPort: 1\n");
    assert_eq!((line, key.as_str()), (2, "forwards[0].target"));
    assert!(message.starts_with("missing: every forward needs target"), "{message}");
    let (line, column, key, message) = refusal(&entry("  - name: web\n    cluster: demo\n    target: pod/x\n    port: 80\n    localPort: 18081\n"));
    assert_eq!((line, column, key.as_str()), (7, 11, "forwards[1].name"));
    assert!(message.contains("duplicate forward name \"web\" (first at line 2 column 11)"), "{message}");
    let (line, _, key, message) = refusal(&entry("  - name: api\n    cluster: demo\n    target: pod/x\n    port: 80\n    localPort: 18080\n"));
    assert_eq!((line, key.as_str()), (11, "forwards[1].localPort"));
    assert!(message.contains("127.0.0.1:18080 is forward \"web\"'s too"), "{message}");
    let (line, _, key, message) = refusal(&entry("    bind: localhost\n"));
    assert_eq!((line, key.as_str()), (7, "forwards[0].bind"));
    assert!(message.contains("not an IP address"), "{message}");
    let (_, _, key, message) = refusal("forwards:\n  - name: web\n    cluster: demo\n    target: job/x\n    port: 80\n    localPort: 1\n");
    assert_eq!(key, "forwards[0].target");
    assert!(message.contains("service/NAME"), "{message}");
    let (_, _, key, _) = refusal("forwards:\n  - name: web\n    cluster: demo\n    target: pod/x\n    port: 0\n    localPort: 1\n");
    assert_eq!(key, "forwards[0].port");
    let (line, _, key, message) = refusal("forwards:\n  - name: web\n    cluster: demo\n    target: pod/x\n    port: 80\n    localPort: 70000\n");
    assert_eq!((line, key.as_str()), (6, "localPort"));
    assert!(message.contains("0 to 65535"), "{message}");
    let (_, _, key, _) = refusal(&entry("    reconnectInitial: 5\n    reconnectMax: 1\n"));
    assert_eq!(key, "forwards[0].reconnectMax");
}

#[test]
fn probes_are_off_by_default_and_named_with_their_position_when_wrong() {
    let entry = |extra: &str| format!("forwards:\n  - name: web\n    cluster: demo\n    target: service/web\n    port: 80\n    localPort: 18080\n{extra}");
    let parsed = |extra: &str| parse(Path::new(FILE), &entry(extra)).unwrap().forwards.unwrap().remove(0);
    let plain = parsed("");
    assert_eq!((&plain.probe, plain.probe_interval, plain.probe_timeout), (&None, Duration::from_secs(10), Duration::from_secs(2)));
    assert_eq!(parsed("    probe: {tcp: true}\n    probeInterval: 0.5\n    probeTimeout: 0.25\n").probe, Some(Probe::Tcp));
    assert_eq!(parsed("    probe: {tcp: false}\n").probe, None);
    assert_eq!(parsed("    probe:\n      http: {path: /healthz?full=1}\n").probe, Some(Probe::Http { path: "/healthz?full=1".into() }));
    assert_eq!(parsed("    probe: {http: {}}\n").probe, Some(Probe::Http { path: "/".into() }));
    let (line, _, key, message) = refusal(&entry("    probe:\n      http: {path: healthz}\n"));
    assert_eq!((line, key.as_str()), (8, "forwards[0].probe.http.path"));
    assert!(message.contains("starting with /"), "{message}");
    let (line, _, key, message) = refusal(&entry("    probe: {tcp: true, http: {path: /}}\n"));
    assert_eq!((line, key.as_str()), (7, "forwards[0].probe"));
    assert!(message.contains("not both"), "{message}");
    let (line, column, key, message) = refusal(&entry("    probeInterval: 0\n"));
    assert_eq!((line, column, key.as_str()), (7, 20, "forwards[0].probeInterval"));
    assert!(message.contains("more than 0"), "{message}");
    let (line, _, key, _) = refusal(&entry("    probe: {udp: true}\n"));
    assert_eq!((line, key.as_str()), (7, "probe"));
}

#[test]
fn a_duplicate_cluster_name_names_both_places() {
    let dir = folder("duplicate");
    let text = "clusters:\n  - name: prod\n    kubeconfig: kubeconfig\n  - name: prod\n    kubeconfig: kubeconfig\n    context: b\n";
    let error = parse(&dir.join("proxy.yaml"), text).unwrap_err();
    let ConfigError::At { line, column, key, message, .. } = &error else { panic!("{error}") };
    assert_eq!((*line, *column, key.as_str()), (4, 11, "clusters[1].name"));
    assert!(message.contains("duplicate cluster name \"prod\" (first at line 2 column 11)"), "{message}");
    // allContexts names its clusters after the contexts, which may collide too.
    let text = "clusters:\n  - name: a\n    kubeconfig: kubeconfig\n  - kubeconfig: kubeconfig\n    allContexts: true\n";
    let error = parse(&dir.join("proxy.yaml"), text).unwrap_err().to_string();
    assert!(error.contains("clusters[1].allContexts") && error.contains("duplicate cluster name \"a\""), "{error}");
}

#[test]
fn missing_files_and_contexts_are_refused() {
    let dir = folder("missing");
    let file = dir.join("proxy.yaml");
    let error = parse(&file, "clusters:\n  - name: x\n    kubeconfig: nope.kubeconfig\n").unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}:3:17: clusters[0].kubeconfig: no such file: ", file.display())), "{error}");
    let error = parse(&file, "clusters:\n  - name: x\n    server: https://10.0.0.1\n    tokenFile: /nonexistent/token\n").unwrap_err().to_string();
    assert!(error.contains(":4:16: clusters[0].tokenFile: no such file: /nonexistent/token"), "{error}");
    let error = parse(&file, "clusters:\n  - name: x\n    kubeconfig: kubeconfig\n    context: c\n").unwrap_err().to_string();
    assert!(error.contains(":4:14: clusters[0].context: no context \"c\"") && error.contains("[\"a\", \"b\"]"), "{error}");
    let error = parse(&file, "clusters:\n  - name: x\n    server: 10.0.0.1\n").unwrap_err().to_string();
    assert!(error.contains(":3:13: clusters[0].server: ") && error.contains("https://"), "{error}");
    let error = parse(&file, "static: /nonexistent/www\n").unwrap_err().to_string();
    assert!(error.contains(":1:9: static: no such directory"), "{error}");
}

#[test]
fn clusters_resolve_to_sources() {
    let dir = folder("sources");
    let text = "clusters:\n  - name: prod\n    kubeconfig: kubeconfig\n  - kubeconfig: kubeconfig\n    allContexts: true\n";
    let config = parse(&dir.join("proxy.yaml"), text).unwrap();
    let sources: Vec<(String, Option<String>)> = config
        .clusters
        .unwrap()
        .into_iter()
        .map(|c| match c {
            ClusterSource::Kubeconfig { name, context, .. } => (name, context),
            ClusterSource::Server { name, .. } | ClusterSource::InCluster { name } => (name, None),
        })
        .collect();
    assert_eq!(sources, [("prod".into(), None), ("a".into(), Some("a".into())), ("b".into(), Some("b".into()))]);
}

#[test]
fn an_in_cluster_entry_is_the_pods_service_account_and_nothing_else() {
    let dir = folder("in-cluster");
    let file = dir.join("proxy.yaml");
    let config = parse(&file, "clusters:\n  - inCluster: true\n  - name: here\n    inCluster: true\n  - name: prod\n    kubeconfig: kubeconfig\n").unwrap();
    let sources: Vec<(bool, &str)> = config.clusters.as_deref().unwrap_or_default().iter().map(|c| (matches!(c, ClusterSource::InCluster { .. }), c.name())).collect();
    assert_eq!(sources, [(true, IN_CLUSTER), (true, "here"), (false, "prod")]);
    // Two unnamed entries are the same name twice.
    let error = parse(&file, "clusters:\n  - inCluster: true\n  - inCluster: true\n").unwrap_err().to_string();
    assert!(error.contains(":3:16: clusters[1].inCluster: duplicate cluster name \"in-cluster\""), "{error}");
    let (line, column, key, message) = refusal("clusters:\n  - inCluster: false\n");
    assert_eq!((line, column, key.as_str()), (2, 16, "clusters[0].inCluster"));
    assert!(message.contains("only true"), "{message}");
    for (field, value) in [("server", "https://10.0.0.1"), ("kubeconfig", "kubeconfig"), ("tokenFile", "kubeconfig"), ("context", "a")] {
        let error = parse(&file, &format!("clusters:\n  - inCluster: true\n    {field}: {value}\n")).unwrap_err().to_string();
        assert!(error.contains(&format!(":3:{}: clusters[0].{field}: an inCluster entry uses the pod's service account", field.len() + 7)), "{error}");
    }
}

#[test]
fn the_example_documents_every_key_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.example.yaml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(config.auth_mode, Some(AuthMode::Proxy));
    assert_eq!(config.terminal_grace, Some(Duration::from_secs(5)));
    let names: Vec<&str> = config.clusters.as_deref().unwrap_or_default().iter().map(ClusterSource::name).collect();
    assert_eq!(names, ["prod", "prod-admin", "prod-viewer", "edge", "in-cluster"]);
    let forwards = config.forwards.unwrap_or_default();
    assert_eq!(forwards.len(), 1);
    assert_eq!((forwards[0].name.as_str(), forwards[0].local_port, forwards[0].connect_timeout), ("web", 18080, Duration::from_secs(30)));
    assert_eq!((&forwards[0].probe, forwards[0].probe_interval, forwards[0].probe_timeout), (&Some(Probe::Http { path: "/healthz".into() }), Duration::from_secs(10), Duration::from_secs(2)));
    // Every key of the file format appears in the example.
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "listen",
        "allowedOrigins",
        "auth",
        "mode",
        "allowAnonymousRemote",
        "clusters",
        "name",
        "kubeconfig",
        "context",
        "allContexts",
        "server",
        "certificateAuthority",
        "tokenFile",
        "inCluster",
        "forwards",
        "maxSubscriptions",
        "maxMessageBytes",
        "maxQueuedBytes",
        "deflate",
        "deflateIdleRelease",
        "history",
        "upstreamIdleTimeout",
        "linger",
        "terminalGrace",
        "terminalPingInterval",
        "healthInterval",
        "drainPeriod",
        "static",
        "namespace",
        "target",
        "port",
        "localPort",
        "bind",
        "reconnectInitial",
        "reconnectMax",
        "connectTimeout",
        "keepaliveInterval",
        "probe",
        "tcp",
        "http",
        "path",
        "probeInterval",
        "probeTimeout",
        "preflightTimeout",
    ] {
        assert!(text.contains(&format!("{key}:")), "the example documents {key}");
    }
}

#[test]
fn nothing_panics_on_odd_input() {
    for text in ["[1, 2]", "listen: [1]", "clusters: 3", "clusters:\n  - 3\n", "auth: true", "{", "a: &x\n  b: *x\n", "history: -1", "maxSubscriptions: 1e99", "\u{0}"] {
        assert!(parse(Path::new(FILE), text).is_err(), "{text:?} was accepted");
    }
    assert!(parse(Path::new(FILE), "").is_ok() && parse(Path::new(FILE), "{}").is_ok());
}
