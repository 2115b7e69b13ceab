//! Query parsing and the validation the API server does before it upgrades an `exec`,
//! `attach` or `portforward` request (reference `exec-portforward-protocol.md` §2.1).
//!
//! Everything here is pure: it takes the raw query string and the pod object and returns
//! either what the session needs or the `ApiError` the real server would answer with.

use serde_json::Value;

use kubemux_protocol::channel::portforward::MAX_PORTS;

use crate::status::ApiError;

/// The streams and target of an `exec` or `attach` request (`PodExecOptions` /
/// `PodAttachOptions`), after the API server's defaulting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamOptions {
    /// `container`, when given.
    pub container: Option<String>,
    /// `command`, one entry per repeated parameter, in order (empty for attach).
    pub command: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr; always false with `tty`, which merges it.
    pub stderr: bool,
    /// Whether the process runs under a terminal.
    pub tty: bool,
}

/// Decodes an `application/x-www-form-urlencoded` query into its pairs, in order (repeated keys
/// kept, as exec's `command` needs). Invalid percent sequences are kept literally.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// `Convert_Slice_string_To_bool`: the first value decides; `"0"` and case-insensitive
/// `"false"` are false, anything else (even empty) is true, absent is false.
fn first_bool(pairs: &[(String, String)], key: &str) -> bool {
    match pairs.iter().find(|(k, _)| k == key) {
        None => false,
        Some((_, v)) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// Parses and validates `exec` (`require_command`) or `attach` options.
pub(crate) fn parse_stream_options(query: &str, require_command: bool) -> Result<StreamOptions, ApiError> {
    let pairs = query_pairs(query);
    let stdin = first_bool(&pairs, "stdin");
    let stdout = first_bool(&pairs, "stdout");
    let stderr = first_bool(&pairs, "stderr");
    let tty = first_bool(&pairs, "tty");
    if !(stdin || stdout || stderr) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    let command: Vec<String> =
        if require_command { pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect() } else { Vec::new() };
    if require_command && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    let container = pairs.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).filter(|c| !c.is_empty());
    // A terminal merges stderr into stdout; the API server silently drops the stream.
    Ok(StreamOptions { container, command, stdin, stdout, stderr: stderr && !tty, tty })
}

/// Parses the `ports` parameter of `portforward`: repeated and/or comma-separated, each
/// 1..=65535, at least one.
pub(crate) fn parse_ports(query: &str) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in query_pairs(query) {
        if key != "ports" {
            continue;
        }
        for raw in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match raw.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port {raw:?}: a port must be a number between 1 and 65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request("query parameter \"ports\" is required: specify at least one port to forward"));
    }
    if ports.len() > MAX_PORTS {
        return Err(ApiError::bad_request(format!("too many ports: at most {MAX_PORTS} may be forwarded at once")));
    }
    Ok(ports)
}

/// The names of a pod's regular containers, in spec order.
pub(crate) fn container_names(pod: &Value) -> Vec<String> {
    names_in(pod, "containers")
}

fn names_in(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The container spec called `name` (regular, init or ephemeral).
pub(crate) fn container_spec<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|field| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// The container a request targets, as `validateContainer` picks it: the named one (any
/// kind of container), or the only regular container when none is named.
pub(crate) fn resolve_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    match requested {
        Some(name) => {
            if container_spec(pod, name).is_some() {
                Ok(name.to_owned())
            } else {
                Err(ApiError::bad_request(format!("container {name} is not valid for pod {pod_name}")))
            }
        }
        None => {
            let names = container_names(pod);
            match names.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ApiError::bad_request(format!("pod {pod_name} does not have a container"))),
                many => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    many.join(" ")
                ))),
            }
        }
    }
}

/// `status.phase`, `Running` when the simulator never set one.
pub(crate) fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Running")
}

/// Refuses to stream into a completed pod, with the verb the real message uses
/// (`exec into` / `attach to`).
pub(crate) fn check_running(pod: &Value, action: &str) -> Result<(), ApiError> {
    match pod_phase(pod) {
        phase @ ("Succeeded" | "Failed") => Err(ApiError::bad_request(format!(
            "cannot {action} a container in a completed pod; current phase is {phase}"
        ))),
        _ => Ok(()),
    }
}

/// A pod annotation.
pub(crate) fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// `metadata.uid` (empty when absent).
pub(crate) fn pod_uid(pod: &Value) -> &str {
    pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn two_container_pod() -> Value {
        json!({"metadata": {"name": "web", "uid": "u1"},
               "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "init"}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn query_decoding_keeps_order_and_repeats() {
        let pairs = query_pairs("command=%2Fbin%2Fsh&command=-c&command=echo+hi%21&container=c&bad=%zz&empty");
        assert_eq!(
            pairs,
            vec![
                ("command".into(), "/bin/sh".into()),
                ("command".into(), "-c".into()),
                ("command".into(), "echo hi!".into()),
                ("container".into(), "c".into()),
                ("bad".into(), "%zz".into()),
                ("empty".into(), "".into()),
            ]
        );
        assert_eq!(query_pairs("x=%4"), vec![("x".into(), "%4".into())]);
    }

    #[test]
    fn booleans_follow_go_conversion() {
        let check = |q: &str| parse_stream_options(q, false).map(|o| (o.stdin, o.stdout, o.stderr, o.tty));
        assert_eq!(check("stdout=true").unwrap(), (false, true, false, false));
        assert_eq!(check("stdout=1&stdin=FALSE&stderr=0").unwrap(), (false, true, false, false));
        assert_eq!(check("stdout=yes&stdin=&tty=False").unwrap(), (true, true, false, false));
        // The first value decides.
        assert_eq!(check("stdout=false&stdout=true&stdin=1").unwrap(), (true, false, false, false));
        // tty silently drops stderr.
        assert_eq!(check("stdout=1&stderr=1&tty=1").unwrap(), (false, true, false, true));
    }

    #[test]
    fn stream_option_errors() {
        let err = parse_stream_options("command=ls&tty=true", true).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "you must specify at least 1 of stdin, stdout, stderr"));
        let err = parse_stream_options("stdout=1", true).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "you must specify at least one command for the container"));
        let ok = parse_stream_options("command=sh&command=-c&command=exit+3&stdout=1&container=a", true).unwrap();
        assert_eq!(ok.command, ["sh", "-c", "exit 3"]);
        assert_eq!(ok.container.as_deref(), Some("a"));
        // attach ignores command.
        assert!(parse_stream_options("stdout=1&command=ls", false).unwrap().command.is_empty());
    }

    #[test]
    fn ports_repeated_and_comma_separated() {
        assert_eq!(parse_ports("ports=8080&ports=9090,80").unwrap(), [8080, 9090, 80]);
        assert_eq!(parse_ports("ports=8080%2C81").unwrap(), [8080, 81]);
        for bad in ["", "ports=", "ports=0", "ports=70000", "ports=http", "ports=80&ports=x"] {
            let err = parse_ports(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
        }
    }

    #[test]
    fn container_resolution() {
        let pod = two_container_pod();
        let err = resolve_container(&pod, "web", None).unwrap_err();
        assert_eq!(err.message, "a container name must be specified for pod web, choose one of: [a b]");
        let err = resolve_container(&pod, "web", Some("c")).unwrap_err();
        assert_eq!(err.message, "container c is not valid for pod web");
        assert_eq!(resolve_container(&pod, "web", Some("b")).unwrap(), "b");
        assert_eq!(resolve_container(&pod, "web", Some("init")).unwrap(), "init");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(resolve_container(&single, "x", None).unwrap(), "only");
    }

    #[test]
    fn completed_pods_are_refused() {
        let mut pod = two_container_pod();
        assert!(check_running(&pod, "exec into").is_ok());
        pod["status"]["phase"] = json!("Succeeded");
        let err = check_running(&pod, "exec into").unwrap_err();
        assert_eq!(err.message, "cannot exec into a container in a completed pod; current phase is Succeeded");
        assert_eq!(pod_phase(&json!({})), "Running");
    }
}
