//! The fidelity suite (`tests/tests/fidelity.rs`: kubectl's tutorial commands and the clients of
//! `tests/fidelity`, directly and through the proxy) and its clients' installs: the official
//! Python client, pip-installed from `requirements.txt` into a virtualenv under the
//! target directory, and `@kubernetes/client-node`, `npm ci` from its lock file. A missing Python
//! or Node.js skips that client's tests, said here and by the tests, except when tools are
//! required (`CI`, `KUBEMUX_REQUIRE_TOOLS=1`), where it fails.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::steps::Outcome;
use crate::workspace::{self, Workspace, find_on_path};

/// Installs what is missing, then runs the fidelity tests with `args` (which carry `--ignored`).
pub fn tests(repo: &Workspace, args: &[String], required: bool) -> anyhow::Result<Outcome> {
    let dir = repo.root.join("tests/fidelity");
    let mut missing = Vec::new();
    let mut test = repo.cargo();
    test.args(["test", "--package", "kubemux-e2e", "--test", "fidelity"]).args(args);
    match find_on_path("python3") {
        Some(python) => {
            let venv = repo.target_dir.join("fidelity-venv");
            let interpreter = venv.join("bin/python");
            if !interpreter.is_file() {
                println!("creating the virtualenv {} for the Python client", venv.display());
                workspace::run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
            }
            let wanted = std::fs::read_to_string(dir.join("requirements.txt")).context("reading tests/fidelity/requirements.txt")?;
            let stamp = venv.join("requirements.installed");
            if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
                println!("found the Python client in {} (requirements.txt unchanged)", venv.display());
            } else {
                println!("installing the Python client into {} with pip install -r tests/fidelity/requirements.txt", venv.display());
                workspace::run(Command::new(&interpreter).args(["-m", "pip", "install", "--quiet", "-r"]).arg(dir.join("requirements.txt")))?;
                std::fs::write(&stamp, &wanted).context("recording the installed requirements")?;
            }
            test.env("KUBEMUX_FIDELITY_PYTHON", &interpreter);
        }
        None => missing.push("python3"),
    }
    match (find_on_path("node"), find_on_path("npm")) {
        (Some(_), Some(_)) => {
            crate::www::npm_packages(&dir)?;
        }
        _ => missing.push("node + npm"),
    }
    if !missing.is_empty() {
        let text = format!("{} not on PATH: those fidelity clients' tests skip", missing.join(" and "));
        if required {
            bail!("{text}, which CI or KUBEMUX_REQUIRE_TOOLS=1 does not allow");
        }
        println!("{text}");
    }
    if required {
        test.env("KUBEMUX_REQUIRE_TOOLS", "1");
    }
    workspace::run(&mut test)?;
    Ok(match missing.is_empty() {
        true => Outcome::Ready("passed (kubectl tutorial, Python client, client-node; direct and through the proxy)".to_owned()),
        false => Outcome::Missing(format!("skipped for want of {}; the rest passed", missing.join(" and "))),
    })
}
