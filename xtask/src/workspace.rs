//! Where the repository and the build cache are, and how to run cargo and other tools there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The repository being worked on and the target directory every child cargo shares.
pub struct Workspace {
    /// The repository root (the workspace's `Cargo.toml` lives here).
    pub root: PathBuf,
    /// `CARGO_TARGET_DIR` for child cargo invocations.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// The workspace this xtask was built from, with the caller's `CARGO_TARGET_DIR` or else
    /// `$HOME/.cache/kubemux/target`: a build cache outside the clone, so that a fresh clone or
    /// a second worktree reuses earlier builds. The directory is created when missing.
    pub fn locate() -> anyhow::Result<Workspace> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask is expected one level below the repository root")?
            .to_owned();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
            // Cargo reads a relative CARGO_TARGET_DIR against the current directory; children
            // run from the root, so pin it down first.
            Some(dir) => std::env::current_dir()?.join(dir),
            None => match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
                Some(home) => PathBuf::from(home).join(".cache/kubemux/target"),
                None => bail!("HOME is not set: set CARGO_TARGET_DIR to choose where builds go"),
            },
        };
        std::fs::create_dir_all(&target_dir)
            .with_context(|| format!("creating the build cache {}", target_dir.display()))?;
        Ok(Workspace { root, target_dir })
    }

    /// `cargo`, run from the repository root with the shared target directory.
    pub fn cargo(&self) -> Command {
        // Under `cargo run`, CARGO names the cargo that started us: use the same toolchain.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command.current_dir(&self.root).env("CARGO_TARGET_DIR", &self.target_dir);
        command
    }
}

/// Prints the command line, runs it with inherited stdio and fails unless it succeeds.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    let status = command.status().with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// The command as a person would type it (program name without its directory).
pub fn command_line(command: &Command) -> String {
    let program = Path::new(command.get_program());
    let program = program.file_name().unwrap_or(program.as_os_str());
    std::iter::once(program)
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first executable called `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}
