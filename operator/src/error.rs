//! What can fail in a reconcile; `reason()` names it in conditions, Events
//! and metrics.

use crate::topic::TopicError;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Topic(#[from] TopicError),
    #[error("TwitterStream has no namespace")]
    NoNamespace,
}

impl Error {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Topic(e) => e.reason(),
            Error::NoNamespace => "NoNamespace",
        }
    }
}
