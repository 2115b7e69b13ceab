//! The two proxies of `kubemux-bench-mux` as separate processes, so that each one's CPU time
//! and resident set can be read from `/proc`: the `kubemux-proxy` binary built next to the
//! bench, and `kubectl proxy` (which must be on PATH: the comparison is the point).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A proxy process, killed when dropped.
pub struct Proc {
    child: tokio::process::Child,
    pid: u32,
    /// host:port it serves on.
    pub addr: String,
}

/// A kubeconfig file for kube-sim at `server`, anonymous, removed with the directory.
pub struct Kubeconfig {
    dir: PathBuf,
    pub path: PathBuf,
}

impl Kubeconfig {
    pub fn write(server: &str) -> anyhow::Result<Kubeconfig> {
        let dir = std::env::temp_dir().join(format!("kubemux-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {server}\nusers:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context:\n    \
                 cluster: sim\n    user: sim\ncurrent-context: sim\n"
            ),
        )?;
        Ok(Kubeconfig { dir, path })
    }
}

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

impl Proc {
    /// The `kubemux-proxy` binary next to this one.
    pub async fn kubemux(kubeconfig: &Path) -> anyhow::Result<Proc> {
        let binary = std::env::current_exe()?.parent().context("the bench's directory")?.join("kubemux-proxy");
        let mut child = tokio::process::Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let first = first_line(&mut child).await?;
        let addr = first.strip_prefix("kubemux-proxy listening on http://").with_context(|| format!("unexpected first line {first:?}"))?.to_owned();
        let pid = child.id().context("a pid")?;
        Ok(Proc { child, pid, addr })
    }

    /// `kubectl proxy --port=0` over the kubeconfig. A missing kubectl is an error.
    pub async fn kubectl(kubeconfig: &Path) -> anyhow::Result<Proc> {
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["proxy", "--port=0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting `kubectl proxy`: kubectl must be on PATH, the bench compares kubemux with it")?;
        let first = first_line(&mut child).await?;
        let addr = first.strip_prefix("Starting to serve on ").with_context(|| format!("unexpected first line of kubectl proxy {first:?}"))?.trim().to_owned();
        let pid = child.id().context("a pid")?;
        Ok(Proc { child, pid, addr })
    }

    /// CPU time so far, in seconds: the sum over its threads of `/proc/PID/task/TID/schedstat`'s
    /// time on CPU (nanoseconds), or `utime + stime` of `/proc/PID/stat` (clock ticks) where
    /// schedstat is missing.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        match schedstat_seconds(self.pid) {
            Some(seconds) => Ok(seconds),
            None => stat_seconds(self.pid),
        }
    }

    /// Resident set, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).context("no VmRSS")
    }

    pub async fn stop(mut self) {
        self.child.kill().await.ok();
    }
}

async fn first_line(child: &mut tokio::process::Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("a piped stdout")?;
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line)).await.context("no listening line within 30 s")??;
    // Keep draining stdout so that the process never blocks writing it.
    tokio::spawn(async move {
        let mut sink = String::new();
        while reader.read_line(&mut sink).await.is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    if line.is_empty() {
        bail!("the process exited before saying where it listens");
    }
    Ok(line.trim().to_owned())
}

fn schedstat_seconds(pid: u32) -> Option<f64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total as f64 / 1e9)
}

fn stat_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ: 100 on every Linux architecture.
    Ok(ticks as f64 / 100.0)
}
