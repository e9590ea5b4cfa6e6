//! The PostgreSQL sink: every final window as one row, written once.
//!
//! Exactly once by an idempotent insert, with Kafka as the one record of
//! progress. The merge stage hands each commit cycle's final windows to
//! [`PostgresSink::write`] *before* the Kafka transaction (or offset commit)
//! that records the partials it consumed; the windows go in one statement,
//! `INSERT … ON CONFLICT (namespace, stream, window_start, window_end) DO
//! NOTHING`. A failure between the two (a SIGKILL, a fenced transaction, a
//! rebalance) replays those partials, the same windows come out again, and
//! their keys are already there: skipped, counted in
//! `postgres_windows_skipped`. Keeping consumed offsets in PostgreSQL too, in
//! the rows' transaction, would give a second record of progress that can
//! disagree with Kafka's (a fenced replica's write lands, its Kafka commit
//! does not), with no atomic way to reconcile the two.
//!
//! Failures never lose a window: the write is retried (the stage waits, and
//! consumes nothing more, meanwhile) until it succeeds or the stage stops;
//! whatever was not committed to Kafka is replayed by the next owner.
//! Every failure is reported to a [`SinkWatch`]; writes that keep failing
//! for `--postgres-grace-seconds` (a wrong password, a missing database, no
//! permission, or a server down that long) end the consumer with the reason,
//! which the pod's termination message and the stream's `ConsumerReady`
//! condition then show. A restart of a few seconds never gets there.

use crate::consumer::aggregate::WindowResult;
use crate::consumer::metrics::{Metrics, ReasonLabels};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twitterstream_contract::postgres::{PostgresSink as Settings, SslMode, key};

/// How long connecting (TCP, TLS, login) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The table's migrations, applied in order on every (re)connection; the
/// applied ones are listed in `<schema>._<table>_migrations`. Never edit one
/// that has shipped: add the next.
///
/// Plain tables, no extensions, no unlogged or temporary tables: a streaming
/// read-only replica serves the queries.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "windows table",
    "CREATE TABLE {table} (
        namespace text NOT NULL,
        stream text NOT NULL,
        window_start timestamptz NOT NULL,
        window_end timestamptz NOT NULL,
        window_seconds integer NOT NULL,
        tweets bigint NOT NULL,
        unique_authors bigint NOT NULL,
        likes bigint NOT NULL,
        late bigint NOT NULL,
        sentiment_mean double precision NOT NULL,
        sentiment_positive bigint NOT NULL,
        sentiment_negative bigint NOT NULL,
        sentiment_neutral bigint NOT NULL,
        hashtags jsonb NOT NULL,
        mentions jsonb NOT NULL,
        languages jsonb NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, stream, window_start, window_end)
    );
    CREATE INDEX {name}_by_start ON {table} (window_start);
    COMMENT ON TABLE {table} IS 'Final windows of the twitterstream consumer: one row per stream and window, written once';",
)];

/// Why a write failed: the reason names a condition, a metric label and a
/// log line.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub(crate) struct SinkError {
    reason: &'static str,
    message: String,
}

impl SinkError {
    pub(crate) fn reason(&self) -> &'static str {
        self.reason
    }

    fn config(message: String) -> Self {
        SinkError {
            reason: "PostgresConfig",
            message,
        }
    }
}

impl From<sqlx::Error> for SinkError {
    fn from(e: sqlx::Error) -> Self {
        let reason = match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // invalid_password, invalid_authorization_specification
                Some("28P01" | "28000") => "PostgresAuthentication",
                // invalid_catalog_name
                Some("3D000") => "PostgresDatabaseMissing",
                // insufficient_privilege, read_only_sql_transaction
                Some("42501" | "25006") => "PostgresPermissionDenied",
                // admin_shutdown, crash_shutdown, cannot_connect_now,
                // too_many_connections
                Some("57P01" | "57P02" | "57P03" | "53300") => "PostgresUnavailable",
                _ => "PostgresError",
            },
            sqlx::Error::Tls(_) => "PostgresTLS",
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => {
                "PostgresUnavailable"
            }
            sqlx::Error::Configuration(_) => "PostgresConfig",
            _ => "PostgresError",
        };
        SinkError {
            reason,
            message: e.to_string(),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for SinkError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => SinkError::from(e),
            e => SinkError {
                reason: "PostgresMigration",
                message: e.to_string(),
            },
        }
    }
}

/// How long the writes have been failing, for the exit after the grace
/// period. Shared by the sink and the pipeline.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkWatch(Arc<Mutex<Option<(Instant, String)>>>);

impl SinkWatch {
    fn failed(&self, e: &SinkError) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let since = r.as_ref().map_or_else(Instant::now, |(s, _)| *s);
        *r = Some((since, e.to_string()));
    }

    fn succeeded(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The last failure, once the writes have failed for `grace`.
    pub(crate) fn failed_for(&self, grace: Duration) -> Option<String> {
        let r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref()
            .filter(|(since, _)| since.elapsed() >= grace)
            .map(|(_, last)| last.clone())
    }

    /// Resolves with the last failure once the writes have failed
    /// for `grace` (checked every second).
    pub(crate) async fn failing_for(&self, grace: Duration) -> String {
        loop {
            if let Some(last) = self.failed_for(grace) {
                return last;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Where final windows go besides the output topic. The stage calls `write`
/// before it commits the input offsets of the windows.
pub(crate) trait WindowSink: Send {
    /// Writes the windows, retrying until done. `Err` only when `stop` said
    /// so while it could not write.
    fn write(&mut self, windows: &[WindowResult], stop: &dyn Fn() -> bool) -> Result<(), Stopped>;
}

/// A write given up because the stage is stopping.
#[derive(Debug)]
pub(crate) struct Stopped;

pub(crate) struct PostgresSink {
    settings: Settings,
    namespace: String,
    runtime: tokio::runtime::Handle,
    conn: Option<PgConnection>,
    metrics: Arc<Metrics>,
    watch: SinkWatch,
    insert: String,
}

impl PostgresSink {
    pub(crate) fn new(
        settings: Settings,
        namespace: &str,
        runtime: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
        watch: SinkWatch,
    ) -> Self {
        let insert = insert_sql(&qualified(&settings));
        PostgresSink {
            settings,
            namespace: namespace.to_owned(),
            runtime,
            conn: None,
            metrics,
            watch,
            insert,
        }
    }

    /// One attempt: connects (and migrates) when needed, then writes.
    /// Returns how many windows were new.
    async fn try_write(&mut self, windows: &[WindowResult]) -> Result<u64, SinkError> {
        if self.conn.is_none() {
            let mut conn = connect(&self.settings).await?;
            migrate(&mut conn, &self.settings).await?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        let rows = Rows::new(&self.namespace, windows);
        let query = sqlx::query(AssertSqlSafe(self.insert.clone()))
            .bind(rows.namespace)
            .bind(rows.stream)
            .bind(rows.window_start)
            .bind(rows.window_end)
            .bind(rows.window_seconds)
            .bind(rows.tweets)
            .bind(rows.unique_authors)
            .bind(rows.likes)
            .bind(rows.late)
            .bind(rows.sentiment_mean)
            .bind(rows.sentiment_positive)
            .bind(rows.sentiment_negative)
            .bind(rows.sentiment_neutral)
            .bind(rows.hashtags)
            .bind(rows.mentions)
            .bind(rows.languages);
        match tokio::time::timeout(WRITE_TIMEOUT, query.execute(&mut *conn)).await {
            Ok(done) => Ok(done?.rows_affected()),
            Err(_) => Err(SinkError {
                reason: "PostgresUnavailable",
                message: format!("a write took over {WRITE_TIMEOUT:?}"),
            }),
        }
    }
}

impl WindowSink for PostgresSink {
    fn write(&mut self, windows: &[WindowResult], stop: &dyn Fn() -> bool) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let runtime = self.runtime.clone();
            match runtime.block_on(self.try_write(windows)) {
                Ok(new) => {
                    self.watch.succeeded();
                    self.metrics
                        .postgres_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.postgres_windows_written.inc_by(new);
                    self.metrics
                        .postgres_windows_skipped
                        .inc_by((windows.len() as u64).saturating_sub(new));
                    return Ok(());
                }
                Err(e) => {
                    self.conn = None;
                    self.metrics
                        .postgres_errors
                        .get_or_create(&ReasonLabels { reason: e.reason() })
                        .inc();
                    self.watch.failed(&e);
                    tracing::warn!(error = %e, windows = windows.len(), retry_in = ?backoff, "writing windows to PostgreSQL failed; retrying (nothing is committed to Kafka meanwhile)");
                }
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if stop() {
                    return Err(Stopped);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// `schema.table`: both plain names (the contract's `is_name`), so no
/// quoting is needed.
fn qualified(s: &Settings) -> String {
    format!("{}.{}", s.postgres_schema, s.postgres_table)
}

/// One multi-row insert: one array per column, unnested into rows.
fn insert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (namespace, stream, window_start, window_end, window_seconds, \
         tweets, unique_authors, likes, late, sentiment_mean, sentiment_positive, \
         sentiment_negative, sentiment_neutral, hashtags, mentions, languages) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]::timestamptz[], \
         $4::text[]::timestamptz[], $5::int[], $6::bigint[], $7::bigint[], $8::bigint[], \
         $9::bigint[], $10::float8[], $11::bigint[], $12::bigint[], $13::bigint[], \
         $14::text[]::jsonb[], $15::text[]::jsonb[], $16::text[]::jsonb[]) \
         ON CONFLICT (namespace, stream, window_start, window_end) DO NOTHING"
    )
}

/// The windows as columns.
#[derive(Default)]
struct Rows {
    namespace: Vec<String>,
    stream: Vec<String>,
    window_start: Vec<String>,
    window_end: Vec<String>,
    window_seconds: Vec<i32>,
    tweets: Vec<i64>,
    unique_authors: Vec<i64>,
    likes: Vec<i64>,
    late: Vec<i64>,
    sentiment_mean: Vec<f64>,
    sentiment_positive: Vec<i64>,
    sentiment_negative: Vec<i64>,
    sentiment_neutral: Vec<i64>,
    hashtags: Vec<String>,
    mentions: Vec<String>,
    languages: Vec<String>,
}

impl Rows {
    fn new(namespace: &str, windows: &[WindowResult]) -> Self {
        let mut r = Rows::default();
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for w in windows {
            let seconds = chrono::DateTime::parse_from_rfc3339(&w.window_end)
                .ok()
                .zip(chrono::DateTime::parse_from_rfc3339(&w.window_start).ok())
                .map_or(0, |(end, start)| (end - start).num_seconds());
            r.namespace.push(namespace.to_owned());
            r.stream.push(w.stream.clone());
            r.window_start.push(w.window_start.clone());
            r.window_end.push(w.window_end.clone());
            r.window_seconds
                .push(i32::try_from(seconds).unwrap_or(i32::MAX));
            r.tweets.push(n(w.count));
            r.unique_authors.push(n(w.unique_authors));
            r.likes.push(n(w.likes));
            r.late.push(n(w.late));
            r.sentiment_mean.push(w.sentiment.mean);
            r.sentiment_positive.push(n(w.sentiment.positive));
            r.sentiment_negative.push(n(w.sentiment.negative));
            r.sentiment_neutral.push(n(w.sentiment.neutral));
            let json = |v: serde_json::Result<String>| v.unwrap_or_else(|_| "null".to_owned());
            r.hashtags.push(json(serde_json::to_string(&w.hashtags)));
            r.mentions.push(json(serde_json::to_string(&w.mentions)));
            r.languages.push(json(serde_json::to_string(&w.languages)));
        }
        r
    }
}

/// The file `name` of the mounted Secret, when present.
fn secret_file(dir: &Path, name: &str) -> Result<Option<String>, SinkError> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SinkError::config(format!(
            "reading {}: {e}",
            dir.join(name).display()
        ))),
    }
}

/// The connection settings from the mounted Secret, read now (a rotated
/// password is taken up at the next connection).
fn connect_options(s: &Settings) -> Result<PgConnectOptions, SinkError> {
    let Some(dir) = &s.postgres_dir else {
        return Err(SinkError::config("no --postgres-dir".to_owned()));
    };
    let opts = match secret_file(dir, key::URL)? {
        // The URL's own text never reaches an error: it holds the password.
        Some(url) => ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
            .then(|| url.parse::<PgConnectOptions>().ok())
            .flatten()
            .ok_or_else(|| {
                SinkError::config(format!(
                    "the Secret's {:?} is not a postgres:// URL",
                    key::URL
                ))
            })?,
        None => {
            let need = |k: &str| {
                secret_file(dir, k)?.ok_or_else(|| {
                    SinkError::config(format!(
                        "the Secret has neither {:?} nor {k:?} (mounted at {})",
                        key::URL,
                        dir.display()
                    ))
                })
            };
            let port = match secret_file(dir, key::PORT)? {
                Some(p) => p.parse::<u16>().map_err(|_| {
                    SinkError::config(format!("the Secret's {:?} is not a port: {p:?}", key::PORT))
                })?,
                None => 5432,
            };
            PgConnectOptions::new_without_pgpass()
                .host(&need(key::HOST)?)
                .port(port)
                .database(&need(key::DATABASE)?)
                .username(&need(key::USER)?)
                .password(&need(key::PASSWORD)?)
        }
    };
    let mut opts = opts
        .ssl_mode(match s.postgres_sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
        .application_name("twitterstream-consumer");
    let ca = dir.join(key::CA);
    if ca.exists() {
        opts = opts.ssl_root_cert(ca);
    }
    Ok(opts)
}

async fn connect(s: &Settings) -> Result<PgConnection, SinkError> {
    let opts = connect_options(s)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(SinkError {
            reason: "PostgresUnavailable",
            message: format!("connecting took over {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// Creates the schema when missing, then applies the table's migrations.
/// The schema is looked up first: `CREATE SCHEMA IF NOT EXISTS` needs the
/// CREATE privilege on the database even when the schema exists.
async fn migrate(conn: &mut PgConnection, s: &Settings) -> Result<(), SinkError> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(&s.postgres_schema)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", s.postgres_schema);
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    migrator(s).run(&mut *conn).await?;
    Ok(())
}

/// The migrations for the configured table, with their history beside it.
fn migrator(s: &Settings) -> Migrator {
    let table = qualified(s);
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            let sql = sql
                .replace("{table}", &table)
                .replace("{name}", &s.postgres_table);
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name(format!(
        "{}._{}_migrations",
        s.postgres_schema, s.postgres_table
    ));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_names_the_configured_table_and_skips_known_windows() {
        let s = Settings {
            postgres_schema: "analytics".to_owned(),
            postgres_table: "tweets_10s".to_owned(),
            ..Settings::default()
        };
        let sql = insert_sql(&qualified(&s));
        assert!(sql.starts_with("INSERT INTO analytics.tweets_10s ("));
        assert!(sql.ends_with("DO NOTHING"));
        let m = migrator(&s);
        let first = m.iter().next().expect("a migration");
        assert!(
            first
                .sql
                .as_str()
                .contains("CREATE TABLE analytics.tweets_10s")
        );
        assert!(
            first
                .sql
                .as_str()
                .contains("tweets_10s_by_start ON analytics.tweets_10s")
        );
    }

    #[test]
    fn failures_are_named_by_what_the_user_must_fix() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(SinkError::from(io).reason(), "PostgresUnavailable");
        assert_eq!(SinkError::config("x".to_owned()).reason(), "PostgresConfig");
    }

    #[test]
    fn a_secret_without_url_or_host_names_what_is_missing_and_no_value() {
        let dir = std::env::temp_dir().join(format!("tws-pg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(key::PASSWORD), "hunter2").unwrap();
        let s = Settings {
            postgres_dir: Some(dir.clone()),
            ..Settings::default()
        };
        let e = connect_options(&s).expect_err("no host");
        assert_eq!(e.reason(), "PostgresConfig");
        assert!(e.to_string().contains("\"host\""), "{e}");
        std::fs::write(dir.join(key::URL), "u:hunter2 at no host").unwrap();
        let e = connect_options(&s).expect_err("bad url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watch_counts_failures_from_the_first_and_a_success_clears_them() {
        let w = SinkWatch::default();
        let e = SinkError::config("x".to_owned());
        w.failed(&e);
        assert!(w.failed_for(Duration::ZERO).is_some());
        assert!(w.failed_for(Duration::from_secs(3600)).is_none());
        w.succeeded();
        assert!(w.failed_for(Duration::ZERO).is_none());
    }
}
