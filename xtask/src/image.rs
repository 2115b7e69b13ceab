//! `cargo xtask image`: the proxy's container image, built offline with podman from
//! `deploy/Containerfile`: a static `kubemux-proxy` (musl, release, stripped), the build
//! machine's CA bundle and a numeric non-root user, `FROM scratch`.
//!
//! `cargo xtask test` builds it too (cached: cargo's incremental build in the target directory
//! and podman's layer cache make an unchanged image a few seconds of work), unpacks its root
//! filesystem and runs the `deploy_image` test on it: the binary started from that root as the
//! image's user, against a kube-sim.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::steps::{self, Outcome, Summary};
use crate::workspace::{self, Workspace, find_on_path};

/// The target whose binaries need no libc on the machine that runs them.
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The image's name; tagged with the proxy's version and `latest`.
const IMAGE: &str = "localhost/kubemux-proxy";

/// The size the image must stay under (30 MB).
const MAX_BYTES: u64 = 30_000_000;

/// Debian's CA bundle, copied into the image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `ring` compiles C for the musl target: Debian's musl-tools provides the compiler wrapper.
const MUSL_GCC: &str = "/usr/bin/musl-gcc";

/// What `podman image inspect` says the image runs, for the test to run the same.
struct Built {
    tag: String,
    bytes: u64,
    user: String,
    entrypoint: String,
}

/// `cargo xtask image`.
pub fn run() -> anyhow::Result<()> {
    let repo = Workspace::locate()?;
    println!("{}\nbuild cache: {}", announcement(), repo.target_dir.display());
    let mut summary = Summary::new("cargo xtask image");
    let built = OnceCell::new();
    build_steps(&mut summary, &repo, &built);
    summary.finish()
}

fn announcement() -> String {
    format!(
        "cargo xtask image: installs what is missing (rustup target {MUSL}; Debian musl-tools for musl-gcc, \
         ca-certificates and podman with apt-get), builds kubemux-proxy for {MUSL} (release, stripped), lays out \
         the build context and builds {IMAGE} from deploy/Containerfile with podman (FROM scratch: nothing is pulled)"
    )
}

/// The steps that leave the image built, its facts in `built`.
fn build_steps(summary: &mut Summary, repo: &Workspace, built: &OnceCell<Built>) {
    summary.step("rustup target x86_64-unknown-linux-musl", || steps::ensure_rust_target(MUSL));
    summary.step("musl-gcc, CA certificates (Debian)", || steps::ensure_debian(&["musl-tools", "ca-certificates"], &[MUSL_GCC, CA_BUNDLE]));
    summary.step("podman (Debian)", || steps::ensure_debian(&["podman"], &["/usr/bin/podman"]));
    let binary = OnceCell::new();
    summary.step("static kubemux-proxy (musl, release, stripped)", || {
        let path = build_binary(repo)?;
        let bytes = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
        let shown = format!("{} ({})", path.display(), megabytes(bytes));
        let _ = binary.set(path);
        Ok(Outcome::Ready(shown))
    });
    summary.step("image localhost/kubemux-proxy", || {
        let image = build_image(repo, binary.get().context("no binary")?)?;
        let shown = format!("{} ({}, user {}, entrypoint {})", image.tag, megabytes(image.bytes), image.user, image.entrypoint);
        let _ = built.set(image);
        Ok(Outcome::Ready(shown))
    });
}

/// `cargo xtask test`'s image steps: build, unpack, and the `deploy_image` test. Without podman
/// they skip, loudly, unless tools are required (CI).
pub fn test_steps(summary: &mut Summary, repo: &Workspace, required: bool) {
    if find_on_path("podman").is_none() && !required {
        summary.step("image", || {
            println!("podman is not on PATH: the image is neither built nor tested (`cargo xtask image` installs it)");
            Ok(Outcome::Missing("skipped: podman not on PATH (required under CI or KUBEMUX_REQUIRE_TOOLS=1)".to_owned()))
        });
        return;
    }
    if !running_as_root() && !required {
        summary.step("image", || {
            println!("not root: podman image mount, which the image test unpacks the image with, needs root");
            Ok(Outcome::Missing("skipped: the image test unpacks the image with podman image mount, as root".to_owned()))
        });
        return;
    }
    println!("{}; then unpacks it and runs the deploy_image test on its root filesystem", announcement());
    let built = OnceCell::new();
    build_steps(summary, repo, &built);
    summary.step("image test (deploy_image)", || {
        let image = built.get().context("no image")?;
        let root = unpack(repo, &image.tag)?;
        let mut command = repo.cargo();
        command
            .args(["test", "--package", "kubemux-e2e", "--test", "deploy_image", "--", "--ignored"])
            .env("KUBEMUX_IMAGE_ROOT", &root)
            .env("KUBEMUX_IMAGE_USER", &image.user)
            .env("KUBEMUX_IMAGE_ENTRYPOINT", &image.entrypoint);
        workspace::run(&mut command)?;
        Ok(Outcome::Ready(format!("passed on {}'s root filesystem ({})", image.tag, root.display())))
    });
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p kubemux-proxy`, stripped;
/// incremental in the shared target directory, so an unchanged proxy costs a second.
fn build_binary(repo: &Workspace) -> anyhow::Result<PathBuf> {
    let mut command = repo.cargo();
    command
        .args(["build", "--release", "--locked", "--target", MUSL, "--package", "kubemux-proxy", "--bin", "kubemux-proxy"])
        // cc-rs would look for `x86_64-linux-musl-gcc`; Debian names the wrapper musl-gcc.
        .env("CC_x86_64_unknown_linux_musl", MUSL_GCC)
        // Stripped here rather than in [profile.release], so native release builds (benchmarks,
        // profiling) keep their symbols.
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    workspace::run(&mut command)?;
    let binary = repo.target_dir.join(MUSL).join("release/kubemux-proxy");
    if !binary.is_file() {
        bail!("cargo built no {}", binary.display());
    }
    Ok(binary)
}

/// Lays out the build context (a folder of its own in the target directory: the binary, the
/// CA bundle, passwd and group) and runs `podman build`, tagging the proxy's version and latest.
fn build_image(repo: &Workspace, binary: &Path) -> anyhow::Result<Built> {
    let context = repo.target_dir.join("image-context");
    if context.exists() {
        std::fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let files = [
        (binary.to_owned(), "kubemux-proxy"),
        (PathBuf::from(CA_BUNDLE), "ca-certificates.crt"),
        (repo.root.join("deploy/image/passwd"), "passwd"),
        (repo.root.join("deploy/image/group"), "group"),
    ];
    for (from, name) in &files {
        std::fs::copy(from, context.join(name)).with_context(|| format!("copying {} into the build context", from.display()))?;
    }
    let version = proxy_version(binary)?;
    let tag = format!("{IMAGE}:{version}");
    workspace::run(
        Command::new("podman")
            .arg("build")
            .arg("--file")
            .arg(repo.root.join("deploy/Containerfile"))
            .args(["--build-arg", &format!("VERSION={version}"), "--tag", &tag, "--tag", &format!("{IMAGE}:latest")])
            .arg(&context),
    )?;
    let inspect = |format: &str| -> anyhow::Result<String> {
        let output = Command::new("podman").args(["image", "inspect", "--format", format, &tag]).output().context("running podman image inspect")?;
        if !output.status.success() {
            bail!("podman image inspect {tag} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let bytes: u64 = inspect("{{.Size}}")?.parse().context("podman's image size is not a number")?;
    let user = inspect("{{.Config.User}}")?;
    let entrypoint = inspect("{{index .Config.Entrypoint 0}}")?;
    if bytes >= MAX_BYTES {
        bail!("{tag} is {}, over the {} it must stay under", megabytes(bytes), megabytes(MAX_BYTES));
    }
    Ok(Built { tag, bytes, user, entrypoint })
}

/// `kubemux-proxy --version`'s version (`kubemux-proxy 0.1.0` gives `0.1.0`). The musl
/// binary runs on the build machine as it is: it is static.
fn proxy_version(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary).arg("--version").output().with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("kubemux-proxy ") {
        Some(version) if output.status.success() && !version.is_empty() => Ok(version.to_owned()),
        _ => bail!("{} --version printed {text:?}", binary.display()),
    }
}

/// A copy of the image's root filesystem in the target directory (`image-root/`), through
/// `podman image mount`; the copy, not the mount, so the test can add its config file and
/// nothing stays mounted.
fn unpack(repo: &Workspace, tag: &str) -> anyhow::Result<PathBuf> {
    let root = repo.target_dir.join("image-root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let output = Command::new("podman").args(["image", "mount", tag]).output().context("running podman image mount")?;
    if !output.status.success() {
        bail!("podman image mount {tag} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let mounted = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let copied = workspace::run(Command::new("cp").arg("--archive").arg(&mounted).arg(&root));
    // Unmounted whether or not the copy worked.
    let unmounted = workspace::run(Command::new("podman").args(["image", "unmount", tag]));
    copied?;
    unmounted?;
    Ok(root)
}

/// Whether this process is root (the owner of its own `/proc/self`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
