//! `cargo xtask scale-out`: the scale-out scenario of `tests/tests/scale_out.rs` for people to
//! watch. Installs Debian's haproxy if it is missing, builds `kubemux-proxy` and the
//! `kubemux-scale-out` binary (release: the figures are of an optimised proxy), and runs it:
//! three replicas behind haproxy, 30 clients, SIGKILLs and a rolling restart with churn on, then
//! with it off. It prints the figures BENCHMARKS.md's "Scale-out" section quotes.

use crate::steps::{Outcome, Summary, ensure_debian};
use crate::workspace::{self, Workspace};

/// Debian's haproxy: the package and the file it must leave.
pub const HAPROXY: (&[&str], &[&str]) = (&["haproxy"], &["/usr/sbin/haproxy"]);

/// Installs haproxy when missing (`cargo xtask test` and `scale-out`).
pub fn ensure_haproxy() -> anyhow::Result<Outcome> {
    ensure_debian(HAPROXY.0, HAPROXY.1)
}

/// `cargo xtask scale-out [--logs]`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = args.iter().find(|a| *a != "--logs") {
        anyhow::bail!("unknown argument {unknown} (expected --logs)");
    }
    let repo = Workspace::locate()?;
    println!(
        "cargo xtask scale-out: installs Debian's haproxy with apt-get if missing, builds kubemux-proxy and kubemux-scale-out \
         (release) and runs the scale-out scenario: 3 proxy processes behind haproxy (deploy/haproxy/haproxy.cfg.example), \
         30 clients × 3 subscriptions, SIGKILLs and a SIGTERM rolling restart with kube-sim churning, then quiet.\n\
         build cache: {}",
        repo.target_dir.display()
    );
    let mut summary = Summary::new("cargo xtask scale-out");
    summary.step("haproxy (Debian)", ensure_haproxy);
    summary.step("build kubemux-proxy and kubemux-scale-out (release)", || {
        workspace::run(repo.cargo().args(["build", "--release", "-p", "kubemux-proxy", "--bin", "kubemux-proxy", "-p", "kubemux-e2e", "--bin", "kubemux-scale-out"]))?;
        Ok(Outcome::Ready("built".to_owned()))
    });
    summary.step("scale-out scenario", || {
        let binary = repo.target_dir.join("release/kubemux-scale-out");
        workspace::run(std::process::Command::new(binary).args(args).current_dir(&repo.root))?;
        Ok(Outcome::Ready("every promise kept".to_owned()))
    });
    summary.finish()
}
