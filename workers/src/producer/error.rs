//! Why a producer run ends with an error.

use super::credentials::CredentialsError;
use super::publisher::PublishError;
use super::resume::ResumeError;
use super::search::SearchError;
use super::stream::StreamError;
use super::xapi::XApiError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot resume: {0}")]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    XApi(#[from] XApiError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot serve {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read replay file {path}: {source}")]
    ReplayFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The brokers kept refusing the clients' login or operations
    /// (`kafka.rs`).
    #[error("this producer {0}")]
    KafkaRefused(crate::kafka::Refused),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Not a failure: the credential files were rewritten (a rotated
    /// Secret) and new clients log in with them (`run.rs`): after a commit,
    /// or at once when the brokers already refuse the old ones (`refused`).
    #[error("the Kafka credentials changed")]
    CredentialsChanged { refused: bool },
}
