//! Pieces both workers' binaries share: TLS set-up, the preflight and the
//! fatal-error report. (Logging is `LogFormat::install` in the contract.)

/// Makes ring rustls's process-wide crypto provider (reqwest is built without
/// one, to share kube's ring and skip aws-lc's slow C build). Idempotent.
pub(crate) fn install_tls_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What both binaries do before starting: an invalid configuration exits 2
/// with its reason, `--print-config` prints the configuration as JSON and
/// exits 0. `None` means: go on and run.
pub fn preflight<T: serde::Serialize, E: std::fmt::Display>(
    args: &T,
    valid: Result<(), E>,
    print_config: bool,
) -> Option<std::process::ExitCode> {
    use std::process::ExitCode;
    if let Err(e) = valid {
        eprintln!("error: {e}");
        return Some(ExitCode::from(2));
    }
    if !print_config {
        return None;
    }
    Some(match serde_json::to_string_pretty(args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Where Kubernetes reads a container's termination message by default
/// (`terminationMessagePath`); `TWS_TERMINATION_LOG` overrides it.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Reports a fatal error and returns the exit code: logged, and written
/// plainly to the termination log when there is one, so that `kubectl
/// describe pod` and the operator's status show why a worker is crash looping
/// rather than the last JSON log line.
pub fn fatal(component: &str, error: &dyn std::fmt::Display, code: u8) -> std::process::ExitCode {
    let message = format!("{component} failed: {error}");
    tracing::error!(error = %error, "{component} failed");
    let path = std::env::var("TWS_TERMINATION_LOG").unwrap_or_else(|_| TERMINATION_LOG.into());
    // Outside Kubernetes the file does not exist; never create /dev entries.
    if std::path::Path::new(&path).exists() || std::env::var_os("TWS_TERMINATION_LOG").is_some() {
        let _ = std::fs::write(&path, message.as_bytes());
    }
    std::process::ExitCode::from(code)
}
