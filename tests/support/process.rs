//! The workspace's own binaries, run as real child processes so tests can
//! kill them (SIGKILL) the way a node failure would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Path of a workspace binary, built (with the same profile and target dir as
/// the running test) on first use. `cargo test` only builds the binaries of a
/// package for that package's own integration tests, so this crate asks cargo.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // target/<profile>/deps/<test exe> or target/<profile>/<bin> -> target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let mut profile_dir = exe
        .parent()
        .expect("executable lives in target/<profile>")
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|d| d == "deps") {
        profile_dir.pop();
    }
    let path = profile_dir.join(name);
    // `tests/run` builds every binary before the lanes start and says so:
    // asking cargo again from each test process only queued them on its
    // lock (30 s for one test under CI's parallel lanes).
    if std::env::var_os("TWS_BINARIES_BUILT").is_some() && path.exists() {
        return path;
    }
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name])
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
        built.push(name.to_string());
    }
    path
}

/// A child process that is killed when dropped, with its output in a log
/// file under the environment's log directory.
pub struct ChildProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildProcess {
    pub fn spawn(mut cmd: Command, log_name: &str) -> Self {
        let dir = PathBuf::from(crate::env_var("TWS_ENV_DIR"))
            .join("logs")
            .join("tests");
        let log = dir.join(format!("{log_name}.log"));
        std::fs::create_dir_all(log.parent().unwrap_or(&dir)).expect("log dir");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Self { child, log }
    }

    /// SIGKILL: no chance to clean up, as when a node dies.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("waiting for child")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        let name = self
            .log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        show_tail_if_failing(name.as_deref().unwrap_or("process"), &self.log);
    }
}

/// Lines of a process's log a failing test prints when it drops the process.
const FAILING_TAIL_LINES: usize = 40;

/// When the test is failing (panicking), prints the end of `log` to stderr:
/// a flaky failure on CI leaves its processes' logs on a machine nobody can
/// read afterwards, so the test's own output has to carry them.
pub fn show_tail_if_failing(name: &str, log: &std::path::Path) {
    if !std::thread::panicking() {
        return;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(FAILING_TAIL_LINES)..];
    eprintln!(
        "---- the last {} lines of {name} ({}) ----\n{}",
        tail.len(),
        log.display(),
        tail.join("\n")
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Runs `program` to its end, `stdin` written to it; its output, or a
/// panic with its status and stderr when it failed.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for the command");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
