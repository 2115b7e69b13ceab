//! Scale-out proven behind a real load balancer (issue 15; DESIGN.md "Scaling out"): three
//! `kubemux-proxy` processes behind haproxy, 30 clients with 3 subscriptions each, replicas
//! SIGKILLed six times and restarted in turn with SIGTERM while kube-sim churns, then three
//! kills and a rolling restart with churn stopped (the scenario: `kubemux_e2e::scale_out`).
//! Every cache ends equal to the simulator's lists, live events stay in version order, nothing
//! arrives twice, no resume is a `reset`, and every client saw 1001 in each rolling restart.
//!
//! Needs haproxy (`cargo xtask test` installs Debian's): without it the test says it skipped,
//! and under `CI` or `KUBEMUX_REQUIRE_TOOLS=1` it fails instead.

use kubemux_e2e::proxy_binary;
use kubemux_e2e::scale_out::{Scenario, find_haproxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_survive_kills_and_rolling_restarts_without_a_reset() {
    let Some(haproxy) = find_haproxy() else {
        let required = std::env::var_os("CI").is_some() || std::env::var("KUBEMUX_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "haproxy is not installed, and CI (or KUBEMUX_REQUIRE_TOOLS=1) requires this test to run: apt-get install haproxy, or cargo xtask test");
        eprintln!("SKIPPED scale_out: haproxy is not installed (apt-get install haproxy, or cargo xtask test installs it)");
        return;
    };
    let report = Scenario::new(proxy_binary(), haproxy).run().await.expect("the scenario runs");
    println!("{report}");
    let problems = report.problems();
    assert!(problems.is_empty(), "{report}\n{}", problems.join("\n"));
    assert!(report.resumes >= report.restarts.iter().map(|r| r.affected * 3).sum::<usize>(), "every moved client resumed every subscription: {report}");
}
