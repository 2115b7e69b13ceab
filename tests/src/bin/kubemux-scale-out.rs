//! `cargo xtask scale-out`: the scale-out scenario of `tests/tests/scale_out.rs`
//! ([`kubemux_e2e::scale_out`]) for people to watch, printing its figures. The proxy binary is
//! the one next to this one (`cargo xtask scale-out` builds both), or `KUBEMUX_PROXY_BIN`.

use std::path::PathBuf;
use std::process::ExitCode;

use kubemux_e2e::scale_out::{Scenario, find_haproxy};

#[tokio::main]
async fn main() -> ExitCode {
    let proxy = std::env::var_os("KUBEMUX_PROXY_BIN").map(PathBuf::from).or_else(|| std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("kubemux-proxy"))));
    let Some(proxy) = proxy.filter(|p| p.is_file()) else {
        eprintln!("kubemux-scale-out: no kubemux-proxy binary next to this one; build it (cargo xtask scale-out does) or set KUBEMUX_PROXY_BIN");
        return ExitCode::FAILURE;
    };
    let Some(haproxy) = find_haproxy() else {
        eprintln!("kubemux-scale-out: haproxy is not installed (Debian: apt-get install haproxy; cargo xtask scale-out installs it)");
        return ExitCode::FAILURE;
    };
    let mut scenario = Scenario::new(proxy, haproxy);
    scenario.show_logs = std::env::args().any(|a| a == "--logs");
    println!("kubemux-scale-out: 3 kubemux-proxy replicas behind haproxy, {} clients; SIGKILLs and a rolling restart with churn, then without", scenario.clients);
    match scenario.run().await {
        Ok(report) => {
            println!("{report}");
            let problems = report.problems();
            if problems.is_empty() {
                println!("every promise kept");
                ExitCode::SUCCESS
            } else {
                for problem in problems {
                    println!("PROBLEM: {problem}");
                }
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("kubemux-scale-out: {error:#}");
            ExitCode::FAILURE
        }
    }
}
