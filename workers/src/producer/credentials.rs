//! X API credentials, from the environment or from a mounted Kubernetes
//! Secret directory that is re-read when it changes, so a rotated Secret takes
//! effect without restarting the producer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A credential value. Debug and Display never show it, so a credential
/// cannot leak through `{:?}` in a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for signing and the Authorization header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// OAuth 1.0a user-context credentials (all four are needed to sign).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub consumer_key: Secret,
    pub consumer_secret: Secret,
    pub access_token: Secret,
    pub access_token_secret: Secret,
}

/// What the producer can authenticate with. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<UserCredentials>,
    pub bearer: Option<Secret>,
}

impl Credentials {
    /// App-only: a bearer token and no user context. Full-archive search
    /// (`/2/tweets/search/all`) accepts only this.
    pub(crate) fn is_app_only(&self) -> bool {
        self.user.is_none() && self.bearer.is_some()
    }
}

/// The names of the five credentials: (environment variable, Secret key).
pub(crate) const CONSUMER_KEY: (&str, &str) = ("X_CONSUMER_KEY", "consumerKey");
pub(crate) const CONSUMER_SECRET: (&str, &str) = ("X_CONSUMER_SECRET", "consumerSecret");
pub(crate) const ACCESS_TOKEN: (&str, &str) = ("X_ACCESS_TOKEN", "accessToken");
pub(crate) const ACCESS_TOKEN_SECRET: (&str, &str) = ("X_ACCESS_TOKEN_SECRET", "accessTokenSecret");
pub(crate) const BEARER_TOKEN: (&str, &str) = ("X_BEARER_TOKEN", "bearerToken");

const ALL: [(&str, &str); 5] = [
    CONSUMER_KEY,
    CONSUMER_SECRET,
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    BEARER_TOKEN,
];

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no X API credentials in {source_desc}: set all of {consumer}, {consumer_secret}, {token}, {token_secret} (OAuth 1.0a user context) or {bearer} (app-only)",
        consumer = CONSUMER_KEY.0,
        consumer_secret = CONSUMER_SECRET.0,
        token = ACCESS_TOKEN.0,
        token_secret = ACCESS_TOKEN_SECRET.0,
        bearer = BEARER_TOKEN.0
    )]
    Missing { source_desc: String },
    #[error(
        "incomplete OAuth 1.0a credentials in {source_desc}: missing {missing:?} (and no bearer token)"
    )]
    Incomplete {
        source_desc: String,
        missing: Vec<&'static str>,
    },
    #[error("cannot read credential file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Builds credentials from a lookup of the five names (`pick` chooses which
/// of the pair the lookup understands). Values are trimmed because Secret
/// files created with `echo` end with a newline that is not part of the key.
fn assemble(
    source_desc: &str,
    pick: fn((&'static str, &'static str)) -> &'static str,
    mut lookup: impl FnMut(&'static str) -> Result<Option<String>, CredentialsError>,
) -> Result<Credentials, CredentialsError> {
    let mut get = |pair: (&'static str, &'static str)| -> Result<Option<Secret>, CredentialsError> {
        Ok(lookup(pick(pair))?
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(Secret))
    };
    let ck = get(CONSUMER_KEY)?;
    let cs = get(CONSUMER_SECRET)?;
    let at = get(ACCESS_TOKEN)?;
    let ats = get(ACCESS_TOKEN_SECRET)?;
    let bearer = get(BEARER_TOKEN)?;
    let user = match (ck, cs, at, ats) {
        (
            Some(consumer_key),
            Some(consumer_secret),
            Some(access_token),
            Some(access_token_secret),
        ) => Some(UserCredentials {
            consumer_key,
            consumer_secret,
            access_token,
            access_token_secret,
        }),
        (None, None, None, None) => None,
        (ck, cs, at, ats) => {
            if bearer.is_none() {
                let missing = [
                    (ck.is_none(), pick(CONSUMER_KEY)),
                    (cs.is_none(), pick(CONSUMER_SECRET)),
                    (at.is_none(), pick(ACCESS_TOKEN)),
                    (ats.is_none(), pick(ACCESS_TOKEN_SECRET)),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                return Err(CredentialsError::Incomplete {
                    source_desc: source_desc.to_owned(),
                    missing,
                });
            }
            tracing::warn!(
                source = source_desc,
                "incomplete OAuth 1.0a credentials ignored; using the bearer token"
            );
            None
        }
    };
    if user.is_none() && bearer.is_none() {
        return Err(CredentialsError::Missing {
            source_desc: source_desc.to_owned(),
        });
    }
    Ok(Credentials { user, bearer })
}

impl Credentials {
    /// Reads the `X_*` environment variables.
    pub(crate) fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Credentials::from_env`] with an injected lookup (tests cannot
    /// safely mutate the process environment).
    pub(crate) fn from_lookup(
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Self, CredentialsError> {
        assemble("the environment", |p| p.0, |name| Ok(lookup(name)))
    }

    /// Reads the files of a Secret directory once.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, CredentialsError> {
        let desc = dir.display().to_string();
        assemble(
            &desc,
            |p| p.1,
            |name| {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(CredentialsError::Read { path, source }),
                }
            },
        )
    }
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// Read once: a process's environment does not change.
    Env,
    /// A mounted Secret, re-read whenever its files change.
    Dir(PathBuf),
}

/// What identifies one version of a Secret directory: the `..data` symlink
/// target (Kubernetes swaps it atomically on rotation) plus each file's
/// identity and mtime (for directories written by other means).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    data_link: Option<PathBuf>,
    files: Vec<Option<(u64, SystemTime, u64)>>,
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let data_link = std::fs::read_link(dir.join("..data")).ok();
    let files = ALL
        .iter()
        .map(|(_, name)| {
            // metadata() follows the per-key symlinks into the current
            // `..data` generation, so a swapped target shows up here too.
            std::fs::metadata(dir.join(name)).ok().map(|m| {
                let ino = {
                    #[cfg(unix)]
                    {
                        std::os::unix::fs::MetadataExt::ino(&m)
                    }
                    #[cfg(not(unix))]
                    {
                        0
                    }
                };
                (ino, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())
            })
        })
        .collect();
    Fingerprint { data_link, files }
}

#[derive(Debug)]
struct DirState {
    fingerprint: Option<Fingerprint>,
    current: Option<Arc<Credentials>>,
    generation: u64,
}

/// Hands out the current credentials. Cloning shares the cache.
#[derive(Debug, Clone)]
pub struct CredentialsProvider {
    inner: Arc<ProviderInner>,
}

#[derive(Debug)]
enum ProviderInner {
    Fixed(Arc<Credentials>),
    Dir {
        dir: PathBuf,
        state: Mutex<DirState>,
    },
}

impl CredentialsProvider {
    /// Fixed credentials (the environment, or tests).
    pub fn fixed(credentials: Credentials) -> Self {
        Self {
            inner: Arc::new(ProviderInner::Fixed(Arc::new(credentials))),
        }
    }

    /// Reads the environment now; a directory is read now (to fail fast on a
    /// broken mount) and again whenever it changes.
    pub fn new(source: CredentialSource) -> Result<Self, CredentialsError> {
        match source {
            CredentialSource::Env => Ok(Self::fixed(Credentials::from_env()?)),
            CredentialSource::Dir(dir) => {
                let p = Self {
                    inner: Arc::new(ProviderInner::Dir {
                        dir,
                        state: Mutex::new(DirState {
                            fingerprint: None,
                            current: None,
                            generation: 0,
                        }),
                    }),
                };
                p.current()?;
                Ok(p)
            }
        }
    }

    /// The current credentials. For a directory this costs a few `stat`
    /// calls, so it is called before every request; files are re-read only
    /// when something changed.
    pub(crate) fn current(&self) -> Result<Arc<Credentials>, CredentialsError> {
        match &*self.inner {
            ProviderInner::Fixed(c) => Ok(c.clone()),
            ProviderInner::Dir { dir, state } => {
                // A poisoned lock only means another caller panicked mid-read;
                // the state is still a valid cache.
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let fp = fingerprint(dir);
                if let (Some(old), Some(cur)) = (&st.fingerprint, &st.current)
                    && *old == fp
                {
                    return Ok(cur.clone());
                }
                let creds = Arc::new(Credentials::from_dir(dir)?);
                let changed = st.current.as_deref() != Some(&*creds);
                st.fingerprint = Some(fp);
                st.current = Some(creds.clone());
                if changed {
                    st.generation += 1;
                    tracing::info!(
                        dir = %dir.display(),
                        generation = st.generation,
                        user_context = creds.user.is_some(),
                        bearer = creds.bearer.is_some(),
                        "X API credentials loaded"
                    );
                }
                Ok(creds)
            }
        }
    }

    /// Increments each time a changed set of credentials was loaded.
    pub fn generation(&self) -> u64 {
        match &*self.inner {
            ProviderInner::Fixed(_) => 1,
            ProviderInner::Dir { state, .. } => {
                state.lock().unwrap_or_else(|e| e.into_inner()).generation
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_variables_are_the_contract_reserved_ones() {
        let names: Vec<&str> = ALL.iter().map(|(env, _)| *env).collect();
        assert_eq!(
            names,
            twitterstream_contract::reserved_env::X_CREDENTIALS.to_vec()
        );
    }
    use std::collections::HashMap;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tws-creds-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("hunter2-super-secret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let c = Credentials {
            user: Some(UserCredentials {
                consumer_key: Secret::new("ck-hunter2"),
                consumer_secret: Secret::new("cs-hunter2"),
                access_token: Secret::new("at-hunter2"),
                access_token_secret: Secret::new("ats-hunter2"),
            }),
            bearer: Some(Secret::new("bearer-hunter2")),
        };
        for out in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!out.contains("hunter2"), "{out}");
            assert!(out.contains("[redacted]"));
        }
    }

    #[test]
    fn env_user_context_or_bearer() {
        let env: HashMap<&str, &str> = [
            ("X_CONSUMER_KEY", "a"),
            ("X_CONSUMER_SECRET", "b"),
            ("X_ACCESS_TOKEN", "c"),
            ("X_ACCESS_TOKEN_SECRET", "d\n"),
        ]
        .into();
        let c = Credentials::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let u = c.user.as_ref().unwrap();
        assert_eq!(u.access_token_secret.expose(), "d");
        assert!(!c.is_app_only());

        let c =
            Credentials::from_lookup(|k| (k == "X_BEARER_TOKEN").then(|| "t".to_owned())).unwrap();
        assert!(c.is_app_only());

        let err = Credentials::from_lookup(|k| (k == "X_CONSUMER_KEY").then(|| "a".to_owned()))
            .unwrap_err();
        assert!(
            matches!(err, CredentialsError::Incomplete { ref missing, .. } if missing.len() == 3),
            "{err}"
        );
        assert!(matches!(
            Credentials::from_lookup(|_| None),
            Err(CredentialsError::Missing { .. })
        ));
    }

    /// Lays out a directory the way the kubelet does: keys are symlinks to
    /// `..data/<key>`, `..data` is a symlink to a timestamped directory, and
    /// rotation swaps `..data` with a rename.
    #[cfg(unix)]
    fn kube_write(dir: &Path, generation: u32, files: &[(&str, &str)]) {
        let gen_dir = dir.join(format!("..gen_{generation}"));
        std::fs::create_dir_all(&gen_dir).unwrap();
        for (k, v) in files {
            std::fs::write(gen_dir.join(k), v).unwrap();
            let link = dir.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(k), &link).unwrap();
            }
        }
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn directory_rotation_is_picked_up() {
        let dir = temp_dir("rot");
        kube_write(&dir, 1, &[("bearerToken", "one\n")]);
        let p = CredentialsProvider::new(CredentialSource::Dir(dir.clone())).unwrap();
        assert_eq!(
            p.current().unwrap().bearer.as_ref().unwrap().expose(),
            "one"
        );
        assert_eq!(p.generation(), 1);
        // Unchanged: served from the cache.
        assert_eq!(
            p.current().unwrap().bearer.as_ref().unwrap().expose(),
            "one"
        );
        assert_eq!(p.generation(), 1);
        kube_write(&dir, 2, &[("bearerToken", "two")]);
        assert_eq!(
            p.current().unwrap().bearer.as_ref().unwrap().expose(),
            "two"
        );
        assert_eq!(p.generation(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_directory_rewrite_is_picked_up() {
        let dir = temp_dir("plain");
        std::fs::write(dir.join("bearerToken"), "one").unwrap();
        let p = CredentialsProvider::new(CredentialSource::Dir(dir.clone())).unwrap();
        assert_eq!(
            p.current().unwrap().bearer.as_ref().unwrap().expose(),
            "one"
        );
        // Replace by rename, as editors and config tools do: a new inode.
        std::fs::write(dir.join("bearerToken.tmp"), "three").unwrap();
        std::fs::rename(dir.join("bearerToken.tmp"), dir.join("bearerToken")).unwrap();
        assert_eq!(
            p.current().unwrap().bearer.as_ref().unwrap().expose(),
            "three"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
