//! The consumer's PostgreSQL sink: where the connection Secret is mounted
//! and which table the final windows go to. The operator mounts the Secret
//! named by `spec.sink.postgres.secretName` at [`SECRET_DIR`] and passes the
//! directory, never the secret's contents: the consumer reads the files each
//! time it connects, so a rotated password is taken up at the next
//! connection.

use clap::ValueEnum;
use serde::Serialize;
use std::path::PathBuf;

/// Where the operator mounts the connection Secret in consumer pods.
pub const SECRET_DIR: &str = "/etc/twitterstream/postgres";

/// The connection Secret's keys (files in the mounted directory): `url`, or
/// `host`, `port`, `database`, `user` and `password`; `ca.crt` optional.
pub mod key {
    pub const URL: &str = "url";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const DATABASE: &str = "database";
    pub const USER: &str = "user";
    pub const PASSWORD: &str = "password";
    pub const CA: &str = "ca.crt";
}

/// How the connection uses TLS (libpq's `sslmode`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    ValueEnum,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS, the certificate unverified.
    Require,
    /// TLS, the certificate signed by the CA (`ca.crt`, else the system's).
    VerifyCa,
    /// TLS, the certificate signed by the CA and naming the host.
    #[default]
    VerifyFull,
}

/// The longest schema or table name: the table's migration history is
/// `_<table>_migrations`, and PostgreSQL cuts names at 63 bytes.
pub const MAX_NAME: usize = 48;

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize)]
pub struct PostgresSink {
    /// Write every final window to PostgreSQL, connecting with the files in
    /// this directory (the mounted connection Secret: `url`, or `host`,
    /// `port`, `database`, `user`, `password`; `ca.crt` optional).
    #[arg(long, env = "TWS_POSTGRES_DIR")]
    pub postgres_dir: Option<PathBuf>,
    /// The schema of the windows table (created when missing).
    #[arg(long, env = "TWS_POSTGRES_SCHEMA", default_value = "twitterstream", value_parser = name)]
    pub postgres_schema: String,
    /// The windows table (created, and migrated, on start).
    #[arg(long, env = "TWS_POSTGRES_TABLE", default_value = "windows", value_parser = name)]
    pub postgres_table: String,
    /// TLS to PostgreSQL (libpq's sslmode).
    #[arg(long, env = "TWS_POSTGRES_SSLMODE", value_enum, default_value_t = SslMode::VerifyFull)]
    pub postgres_sslmode: SslMode,
    /// Seconds the writes may keep failing (a wrong password, a missing
    /// database, no permission, the server down) before the consumer exits
    /// with the reason; shorter outages are waited out.
    #[arg(long, env = "TWS_POSTGRES_GRACE_SECONDS", default_value_t = 120)]
    pub postgres_grace_seconds: u64,
}

impl Default for PostgresSink {
    /// The flags' defaults: no PostgreSQL.
    fn default() -> Self {
        PostgresSink {
            postgres_dir: None,
            postgres_schema: "twitterstream".to_owned(),
            postgres_table: "windows".to_owned(),
            postgres_sslmode: SslMode::VerifyFull,
            postgres_grace_seconds: 120,
        }
    }
}

/// Whether `s` is a schema or table name the sink accepts: lower-case
/// letters, digits and `_`, not starting with a digit, at most [`MAX_NAME`]
/// bytes. Such a name never needs quoting, so it goes into SQL as it is
/// (the CRD's pattern says the same).
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= MAX_NAME
}

/// The CRD's pattern for [`is_name`].
pub const NAME_PATTERN: &str = "^[a-z_][a-z0-9_]{0,47}$";

fn name(s: &str) -> Result<String, String> {
    if is_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a PostgreSQL name the sink accepts: lower-case letters, digits and _, not starting with a digit, at most {MAX_NAME} characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_lower_case_identifiers_that_fit() {
        for ok in ["windows", "_t", "tws_2026", &"a".repeat(MAX_NAME)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Windows",
            "2x",
            "a-b",
            "a\"b",
            "a b",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
        let pattern = regex_lite_check(NAME_PATTERN);
        assert_eq!(pattern, MAX_NAME);
    }

    /// The pattern's length bound agrees with MAX_NAME.
    fn regex_lite_check(p: &str) -> usize {
        let bound: usize = p
            .trim_end_matches("}$")
            .rsplit(',')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        bound + 1
    }
}
