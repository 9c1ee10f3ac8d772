//! Shared by the runtime_* tests: a private containerd (own socket, root and state dir,
//! started with scripts/containerd.sh) and the busybox test image built by
//! scripts/build-test-image.sh. Missing containerd, runc or busybox-static is a test
//! failure with a clear message, never a silent skip: CI installs them via
//! scripts/setup.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The image scripts/build-test-image.sh builds.
pub const TEST_IMAGE: &str = "hypermesh.local/busybox:latest";

/// The workspace root (scripts live under it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Panics with the setup hint when a tool the containerd tests need is missing.
pub fn require_tools() {
    for (tool, package) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` not found: the containerd tests need the Debian package `{package}`; \
             run scripts/setup.sh"
        );
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox not found: the containerd tests need the Debian package `busybox-static`; \
         run scripts/setup.sh"
    );
}

/// A containerd started for one test process; stopped (and its directory removed) on drop.
pub struct PrivateContainerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl PrivateContainerd {
    /// Starts containerd with scripts/containerd.sh in a fresh temp dir and waits until
    /// its socket answers.
    pub fn start() -> PrivateContainerd {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("hm-ctd-")
            .tempdir()
            .expect("temp dir for containerd");
        let output = Command::new("bash")
            .arg(workspace_root().join("scripts/containerd.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("running scripts/containerd.sh");
        assert!(
            output.status.success(),
            "scripts/containerd.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let socket = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        PrivateContainerd { dir, socket }
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr --namespace hypermesh <args>` against this containerd: its stdout, for
    /// observing state.
    pub fn ctr(&self, args: &[&str]) -> String {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", hypermesh_containers::NAMESPACE])
            .args(args)
            .output()
            .expect("running ctr");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The directory holding config, root, state and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Stops containerd (SIGTERM) without touching its containers: their shims keep
    /// them running, as on a host where containerd is restarted or crashes. Returns
    /// once the daemon has exited (its socket is gone then).
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Starts containerd again on the same directory; it reconnects to the shims of the
    /// containers that kept running. Returns once its socket answers.
    pub fn restart(&self) {
        let socket = self.script("start");
        assert_eq!(socket, self.socket, "containerd restarted on its socket");
    }

    /// Kills every task and removes every container (`scripts/containerd.sh purge`, what
    /// `make up` does when it stops): as after a host restart, nothing is left running.
    pub fn purge(&self) {
        self.script("purge");
    }

    /// Runs `scripts/containerd.sh <command> <dir>`; its output (the socket path).
    fn script(&self, command: &str) -> PathBuf {
        let output = Command::new("bash")
            .arg(workspace_root().join("scripts/containerd.sh"))
            .arg(command)
            .arg(self.dir.path())
            .output()
            .expect("running scripts/containerd.sh");
        assert!(
            output.status.success(),
            "scripts/containerd.sh {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    }

    /// Builds the busybox test image archive into this containerd's directory.
    pub fn build_test_image(&self) -> PathBuf {
        build_test_archive(self.dir.path())
    }

    /// A fresh agent image directory (`--image-dir`) holding the test image archive.
    pub fn image_dir(&self) -> tempfile::TempDir {
        let images = tempfile::tempdir().expect("image dir");
        std::fs::copy(
            self.build_test_image(),
            images.path().join("busybox.oci.tar"),
        )
        .expect("copy archive");
        images
    }
}

/// Builds the busybox test image archive (scripts/build-test-image.sh) in `dir`.
pub fn build_test_archive(dir: &Path) -> PathBuf {
    let out = dir.join("busybox.oci.tar");
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/build-test-image.sh"))
        .arg(&out)
        .output()
        .expect("running scripts/build-test-image.sh");
    assert!(
        output.status.success(),
        "scripts/build-test-image.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Output of a container to `hm-logger` writing `<dir>/0.log`.
pub fn log_sink(dir: &Path) -> hypermesh_containers::LogSink {
    hypermesh_containers::LogSink {
        logger: crate::bin_path("hm-logger"),
        file: dir.join("0.log"),
        max_bytes: 1024 * 1024,
        max_files: 2,
    }
}

/// The text of a container run's log (as `hmctl logs` shows it) once the logger has
/// written all of it; panics after a minute without the done marker.
pub fn finished_log(file: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !hypermesh_agent::logs::done_marker(file).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}: the logger never finished",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bytes = hypermesh_agent::logs::reader::read(file, Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A container ID unique to this test process, so concurrent or failed runs never
/// collide in the shared runc root.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        // Every task and container goes, so a test that failed midway leaves no shim,
        // runc state (runc's root is shared by all containerds) or cgroup behind.
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/containerd.sh"))
            .arg("purge")
            .arg(self.dir.path())
            .output();
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/containerd.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// A file of the cgroup process `pid` is in for `controller`: `v1_file` in the cgroup v1
/// hierarchy of that controller, else `v2_file` in the unified hierarchy. Trimmed text.
pub fn cgroup_file(pid: u32, controller: &str, v1_file: &str, v2_file: &str) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut unified = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == controller) {
            let file = format!("/sys/fs/cgroup/{controllers}{path}/{v1_file}");
            return std::fs::read_to_string(file)
                .ok()
                .map(|t| t.trim().to_string());
        }
        if controllers.is_empty() {
            unified = Some(format!("/sys/fs/cgroup{path}/{v2_file}"));
        }
    }
    std::fs::read_to_string(unified?)
        .ok()
        .map(|t| t.trim().to_string())
}

/// The memory limit (bytes) of the cgroup process `pid` is in, read from /sys/fs/cgroup
/// (cgroup v1 `memory.limit_in_bytes` or v2 `memory.max`).
pub fn memory_limit_of(pid: u32) -> Option<u64> {
    cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")?
        .parse()
        .ok()
}

/// The CFS quota (µs per period) of `pid`'s cgroup (v1 `cpu.cfs_quota_us`, or the first
/// field of v2 `cpu.max`).
pub fn cpu_quota_of(pid: u32) -> Option<u64> {
    cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pids limit of `pid`'s cgroup (`pids.max`).
pub fn pids_limit_of(pid: u32) -> Option<u64> {
    cgroup_file(pid, "pids", "pids.max", "pids.max")?
        .parse()
        .ok()
}
