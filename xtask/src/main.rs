//! `cargo xtask`: the commands the README promises. Each one says what it installs, installs
//! what is missing, and then does its job.
//!
//! - `cargo xtask demo`: the web app on the proxy with embedded simulated clusters, until Ctrl-C.
//! - `cargo xtask test [--repeat N] [-- CARGO-TEST-ARGS]`: run every test (N times).
//! - `cargo xtask wasm`: build the npm package `kubemux` into `wasm-client/pkg/`.
//! - `cargo xtask www`: build the demo web app into `www/dist/`.
//! - `cargo xtask bench [SECTION...]`: run benchmarks and write them into BENCHMARKS.md.
//! - `cargo xtask fuzz [--seconds N] [TARGET...]`: run the fuzz targets in `fuzz/`.
//! - `cargo xtask stress [--seeds N]`: many randomized proxy lifecycles (reloads, clients, shutdown).
//! - `cargo xtask image`: the proxy's container image (static musl binary, `FROM scratch`).
//! - `cargo xtask scale-out [--logs]`: three proxy replicas behind haproxy, killed and restarted under clients; prints the figures.

mod bench;
mod demo;
mod fidelity;
mod fuzz;
mod image;
mod scale_out;
mod steps;
mod stress;
mod test;
mod wasm;
mod workspace;
mod www;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo [--listen ADDR] build the npm package, the web app and the proxy, and run the demo
                       (proxy + embedded simulated clusters + web app) until Ctrl-C
  test [--repeat N] [-- ARGS...]
                       install what the tests need and run every test; ARGS go to
                       `cargo test --workspace` (e.g. `-- selectors`, `-- -- --nocapture`);
                       --repeat N builds once, runs every suite N times and lists each failure
  wasm                 build the npm package `kubemux` (wasm-client) into wasm-client/pkg/
  www                  build the npm package, then the demo web app (npm ci, vite build) into www/dist/
  bench [SECTION...]   run benchmarks (sections: client) and write them into BENCHMARKS.md
  fuzz [--seconds N] [TARGET...]
                       install cargo-fuzz if missing and run every fuzz target (or those named)
                       for N seconds (default 60) from fuzz/corpus; prints runs, corpus, crashes
  stress [--seeds N]   run N (default 5000) seeded lifecycle schedules of the proxy: reloads,
                       clients connecting, watching and vanishing, health ticks and shutdown
  image                build the container image localhost/kubemux-proxy (deploy/Containerfile):
                       a static musl kubemux-proxy FROM scratch, with podman, offline
  scale-out [--logs]   install haproxy if missing and run the scale-out scenario: 3 proxy replicas
                       behind haproxy, 30 clients, SIGKILLs and a rolling restart with churn and
                       without; prints the figures (--logs: the replicas' and haproxy's warnings)

Builds go to $CARGO_TARGET_DIR, or $HOME/.cache/kubemux/target when it is not set.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "test" => match test::parse(rest) {
            Ok(options) => test::run(options),
            Err(error) => usage_error(&format!("{error:#}")),
        },
        Some((command, rest)) if command == "demo" => demo::run(rest),
        Some((command, rest)) if command == "wasm" && rest.is_empty() => wasm::run(),
        Some((command, rest)) if command == "www" && rest.is_empty() => www::run(),
        Some((command, rest)) if command == "bench" => bench::run(rest),
        Some((command, rest)) if command == "fuzz" => fuzz::run(rest),
        Some((command, rest)) if command == "stress" => stress::run(rest),
        Some((command, rest)) if command == "image" && rest.is_empty() => image::run(),
        Some((command, rest)) if command == "scale-out" => scale_out::run(rest),
        Some((command, _)) if matches!(command.as_str(), "help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some((command, _)) => usage_error(&format!("unknown command or arguments: {command} ...")),
        None => usage_error("no command given"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> anyhow::Result<()> {
    eprintln!("{USAGE}\n");
    anyhow::bail!("{message}")
}
