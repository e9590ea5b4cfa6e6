//! The real PostgreSQL of `tests/env/up`: a database and an owner role per
//! test, the connection Secret's files as the consumer reads them, the sink
//! table read back as windows, and the server's restart.

use crate::env_var;
use crate::truth::Window;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A database of its own, owned by a role of its own (password login over
/// TLS), with the connection Secret's files in `secret_dir`.
pub struct Database {
    pub name: String,
    pub user: String,
    pub password: String,
    pub secret_dir: PathBuf,
}

fn ident(prefix: &str) -> String {
    crate::unique_name(prefix).replace('-', "_").to_lowercase()
}

fn server() -> (String, u16) {
    let port = env_var("POSTGRES_PORT").parse().expect("POSTGRES_PORT");
    (env_var("POSTGRES_HOST"), port)
}

fn options(database: &str, user: &str, password: &str) -> PgConnectOptions {
    let (host, port) = server();
    PgConnectOptions::new_without_pgpass()
        .host(&host)
        .port(port)
        .database(database)
        .username(user)
        .password(password)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(env_var("POSTGRES_CA"))
}

/// The environment's superuser, on its `postgres` database.
pub async fn superuser() -> PgConnection {
    let url: PgConnectOptions = env_var("POSTGRES_SUPERUSER_URL")
        .parse()
        .expect("POSTGRES_SUPERUSER_URL");
    let opts = url
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(env_var("POSTGRES_CA"));
    connect(&opts, "the superuser").await
}

/// Connects as `who`, retrying for 30 s: another test may be restarting the
/// server ("the database system is starting up").
async fn connect(opts: &PgConnectOptions, who: &str) -> PgConnection {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match PgConnection::connect_with(opts).await {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("connecting as {who}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => panic!("connecting as {who}: {e}"),
        }
    }
}

/// Runs one statement as the superuser.
pub async fn admin(sql: &str) {
    let mut c = superuser().await;
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Database {
    /// A new database and owner role.
    pub async fn create(prefix: &str) -> Database {
        let name = ident(prefix);
        let user = format!("{name}_owner");
        let password = ident("pw");
        admin(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'")).await;
        admin(&format!("CREATE DATABASE {name} OWNER {user}")).await;
        let secret_dir = std::env::temp_dir().join(format!("{name}-secret"));
        let db = Database {
            name,
            user,
            password,
            secret_dir,
        };
        db.write_secret(&db.secret_dir, &[]);
        db
    }

    /// The Secret's files in `dir`: host, port, database, user, password and
    /// ca.crt, each replaced by `overrides` where named (an empty value
    /// leaves the file out).
    pub fn write_secret(&self, dir: &Path, overrides: &[(&str, &str)]) {
        let (host, port) = server();
        let ca = std::fs::read_to_string(env_var("POSTGRES_CA")).expect("the CA");
        let port = port.to_string();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("secret dir");
        for (k, v) in [
            ("host", host.as_str()),
            ("port", &port),
            ("database", &self.name),
            ("user", &self.user),
            ("password", &self.password),
            ("ca.crt", &ca),
        ] {
            let v = overrides
                .iter()
                .find(|(o, _)| *o == k)
                .map_or(v, |(_, o)| *o);
            if !v.is_empty() {
                std::fs::write(dir.join(k), v).expect("secret file");
            }
        }
    }

    /// The consumer flags that write to this database's `schema.table`.
    pub fn flags(&self, dir: &Path, schema: &str, table: &str) -> Vec<String> {
        [
            "--postgres-dir",
            &dir.display().to_string(),
            "--postgres-schema",
            schema,
            "--postgres-table",
            table,
            "--postgres-sslmode",
            "verify-full",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// A connection as the owner (retried while the server restarts).
    pub async fn connect(&self) -> PgConnection {
        connect(
            &options(&self.name, &self.user, &self.password),
            "the owner",
        )
        .await
    }

    /// The rows of `stream` in `namespace`, as windows by start (ms), and
    /// how many rows there were (more rows than windows: a window written
    /// twice).
    pub async fn windows(
        &self,
        table: &str,
        namespace: &str,
        stream: &str,
    ) -> (BTreeMap<i64, Window>, usize) {
        let mut c = self.connect().await;
        let sql = format!(
            "SELECT (extract(epoch FROM window_start) * 1000)::bigint AS start, tweets, \
             unique_authors, likes, late, hashtags::text AS hashtags, mentions::text AS mentions, \
             languages::text AS languages FROM {table} WHERE namespace = $1 AND stream = $2"
        );
        let rows = match sqlx::query(AssertSqlSafe(sql))
            .bind(namespace)
            .bind(stream)
            .fetch_all(&mut c)
            .await
        {
            Ok(rows) => rows,
            // Not created yet: nothing written.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => panic!("reading {table}: {e}"),
        };
        let n = rows.len();
        let mut out = BTreeMap::new();
        for r in rows {
            let tags = |col: &str| -> BTreeMap<String, u64> {
                let v: Vec<serde_json::Value> =
                    serde_json::from_str(&r.get::<String, _>(col)).expect("a JSON list");
                v.iter()
                    .map(|t| {
                        (
                            t["tag"].as_str().expect("tag").to_owned(),
                            t["count"].as_u64().expect("count"),
                        )
                    })
                    .collect()
            };
            let u = |col: &str| u64::try_from(r.get::<i64, _>(col)).expect("non-negative");
            let w = Window {
                count: u("tweets"),
                unique_authors: u("unique_authors"),
                hashtags: tags("hashtags"),
                mentions: tags("mentions"),
                languages: serde_json::from_str(&r.get::<String, _>("languages"))
                    .expect("a JSON map"),
                likes: u("likes"),
                late: u("late"),
            };
            out.insert(r.get::<i64, _>("start"), w);
        }
        (out, n)
    }
}

/// `tests/env/restart-postgres` with `args` (none: stop immediately, then
/// start; `--stop`; `--start`).
pub fn restart(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("env/restart-postgres");
    let out = Command::new(&script)
        .args(args)
        .output()
        .expect("running tests/env/restart-postgres");
    assert!(
        out.status.success(),
        "tests/env/restart-postgres {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
