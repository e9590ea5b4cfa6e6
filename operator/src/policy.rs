//! Operator-wide rules that a user who may edit TwitterStreams cannot widen:
//! which worker images a resource may name.
//!
//! The schema cannot express this (the allowlist is the operator's
//! setting, not the CRD's), so a resource that names another image is
//! refused in its status and an Event, and its Deployments are left as they
//! were: a pipeline keeps running the last allowed image.

use crate::conditions::{IMAGES_ALLOWED, Observation};
use crate::crd::TwitterStream;
use crate::render::Component;

/// Which images a TwitterStream may run its workers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImagePolicy {
    /// Repositories (any tag or digest of them) and prefixes ending in `/`.
    allowed: Vec<String>,
}

/// A worker image the policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) component: Component,
    pub(crate) image: String,
    allowed: Vec<String>,
}

/// An image reference without its digest and tag: `host:5000/org/name:tag`
/// is `host:5000/org/name` (a colon before the last `/` is a port).
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

impl ImagePolicy {
    /// `allowed` entries are repositories (`ghcr.io/org/workers`, any tag or
    /// digest of it) or prefixes ending in `/` (`registry.example/team/`).
    /// The operator's own worker image's repository is always allowed.
    pub(crate) fn new(worker_image: &str, allowed: &[String]) -> Self {
        let mut all: Vec<String> = allowed
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        all.push(repository(worker_image).to_owned());
        all.sort();
        all.dedup();
        Self { allowed: all }
    }

    pub(crate) fn allows(&self, image: &str) -> bool {
        // A prefix never lets `..` climb out of it.
        let repo = repository(image);
        self.allowed.iter().any(|a| match a.strip_suffix('/') {
            Some(_) => repo.starts_with(a.as_str()) && !repo.contains(".."),
            None => repo == a,
        })
    }

    /// The first worker image of the resource that is not allowed.
    pub(crate) fn refusal(&self, tws: &TwitterStream) -> Option<Refusal> {
        let s = &tws.spec;
        [
            (Component::Producer, &s.producer.container.image),
            (Component::Consumer, &s.consumer.container.image),
        ]
        .into_iter()
        .find_map(|(component, image)| {
            let image = image.as_deref()?;
            (!self.allows(image)).then(|| Refusal {
                component,
                image: image.to_owned(),
                allowed: self.allowed.clone(),
            })
        })
    }
}

impl Refusal {
    pub(crate) const REASON: &'static str = "ImageNotAllowed";

    pub(crate) fn message(&self) -> String {
        format!(
            "{}.image {} is not allowed by the operator (allowed: {}); the Deployments keep their last allowed image",
            self.component.as_str(),
            self.image,
            self.allowed.join(", ")
        )
    }

    pub(crate) fn observation(&self) -> Observation {
        Observation::new(IMAGES_ALLOWED, false, Self::REASON, self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> ImagePolicy {
        let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        ImagePolicy::new(
            "ghcr.io/twitterstream-io/twitterstream-workers:0.1.0",
            &allowed,
        )
    }

    #[test]
    fn repositories_drop_tag_and_digest_but_not_a_port() {
        assert_eq!(repository("ghcr.io/a/b:1.2"), "ghcr.io/a/b");
        assert_eq!(repository("ghcr.io/a/b@sha256:00ff"), "ghcr.io/a/b");
        assert_eq!(repository("localhost:5000/b:tag"), "localhost:5000/b");
        assert_eq!(repository("localhost:5000/b"), "localhost:5000/b");
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn the_worker_images_repository_is_always_allowed_and_nothing_else_by_default() {
        let p = policy(&[]);
        assert!(p.allows("ghcr.io/twitterstream-io/twitterstream-workers:0.2.0"));
        assert!(p.allows("ghcr.io/twitterstream-io/twitterstream-workers@sha256:00"));
        assert!(!p.allows("ghcr.io/twitterstream-io/twitterstream-workers-evil:0.1.0"));
        assert!(!p.allows("ghcr.io/twitterstream-io/other:0.1.0"));
        assert!(!p.allows("docker.io/library/busybox"));
    }

    #[test]
    fn prefixes_allow_what_is_under_them_only() {
        let p = policy(&["registry.example/team/", "docker.io/library/alpine"]);
        assert!(p.allows("registry.example/team/workers:1"));
        assert!(p.allows("registry.example/team/sub/workers:1"));
        assert!(!p.allows("registry.example/teammate/workers:1"));
        assert!(!p.allows("registry.example/team/../other/workers:1"));
        assert!(p.allows("docker.io/library/alpine:3"));
        assert!(!p.allows("docker.io/library/alpine-evil:3"));
    }
}
