//! What every reconcile shares: the client, the rendering settings, Kafka,
//! metrics, Events, and the caches that keep a steady state cheap.

use crate::autoscale;
use crate::child::ChildDeployment;
use crate::crd::TwitterStream;
use crate::error::Error;
use crate::events::Events;
use crate::metrics::{Metrics, StreamLabels};
use crate::policy::ImagePolicy;
use crate::render::{FIELD_MANAGER, RenderConfig};
use crate::throughput::Sample;
use crate::topic::{TopicRequest, Topics};
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A stream's key in the per-object maps.
pub(crate) fn key(tws: &TwitterStream) -> (String, String) {
    (tws.namespace().unwrap_or_default(), tws.name_any())
}

/// How long a successful topic check is trusted.
const TOPIC_RECHECK: Duration = Duration::from_secs(60);

/// A stream's sampling: when it was last sampled (or first seen), the last
/// sample, and what the autoscaler remembers of the samples.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sampled {
    at_ms: i64,
    last: Option<Sample>,
    autoscaler: autoscale::State,
}

/// Shared by every reconcile.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) render: RenderConfig,
    pub(crate) images: ImagePolicy,
    pub(crate) topics: Topics,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Events,
    /// Consecutive failures per object, for the error policy's backoff.
    pub(crate) failures: Mutex<HashMap<(String, String), u32>>,
    /// Watch caches of the children, per watched scope (None = all namespaces).
    pub(crate) deployment_caches: RwLock<Vec<(Option<String>, Store<ChildDeployment>)>>,
    /// When each topic was last found as the spec asks: Kafka is asked again
    /// only after TOPIC_RECHECK, not on every pod event.
    pub(crate) topics_checked: Mutex<HashMap<TopicRequest, Instant>>,
    /// Per child Deployment (namespace, name): its generation after this
    /// process last applied it. A Deployment at another generation was
    /// changed by someone else (`kubectl edit`, `kubectl scale deploy`), and
    /// the render hash it still carries would hide that.
    pub(crate) applied_generations: Mutex<HashMap<(String, String), i64>>,
    /// Streams (namespace, name) known to have no NetworkPolicies of ours,
    /// so a stream without `spec.networkPolicy` costs no request after the
    /// first reconcile of this process.
    pub(crate) without_policies: Mutex<HashSet<(String, String)>>,
    /// How long deletion waits for topics to be deleted (see `finalize`).
    pub(crate) topic_delete_timeout: Duration,
    /// Each stream's last throughput sample, for its rates and for when the
    /// next one is due.
    pub(crate) samples: Mutex<HashMap<(String, String), Sampled>>,
    /// The shortest time between two samples of a stream.
    pub(crate) min_sample_interval: Duration,
}

impl Context {
    pub(crate) fn new(
        client: Client,
        render: RenderConfig,
        topics: Topics,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(instance),
        };
        Self {
            events: Events::start(client.clone(), reporter),
            client,
            images: ImagePolicy::new(&render.worker_image, &[]),
            render,
            topics,
            metrics,
            failures: Mutex::new(HashMap::new()),
            deployment_caches: RwLock::new(Vec::new()),
            topics_checked: Mutex::new(HashMap::new()),
            applied_generations: Mutex::new(HashMap::new()),
            without_policies: Mutex::new(HashSet::new()),
            topic_delete_timeout: Duration::from_secs(300),
            samples: Mutex::new(HashMap::new()),
            min_sample_interval: crate::throughput::MIN_REFRESH,
        }
    }

    /// The TwitterStreams this operator watches, other than `tws` and those
    /// being deleted: a topic one of them uses is not deleted with `tws`.
    pub(crate) async fn other_streams(
        &self,
        tws: &TwitterStream,
    ) -> Result<Vec<TwitterStream>, Error> {
        let scopes: Vec<Option<String>> = self
            .deployment_caches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(scope, _)| scope.clone())
            .collect();
        let mut out = Vec::new();
        for scope in scopes {
            let api: Api<TwitterStream> = match &scope {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            for o in api.list(&ListParams::default()).await? {
                let same = o.namespace() == tws.namespace() && o.name_any() == tws.name_any();
                if !same && o.meta().deletion_timestamp.is_none() {
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    /// How long a deleted stream waits for its topics to be deleted while
    /// Kafka is unreachable before it is deleted anyway.
    /// Images resources may name beyond the worker image's repository.
    pub(crate) fn with_allowed_images(mut self, allowed: &[String]) -> Self {
        self.images = ImagePolicy::new(&self.render.worker_image, allowed);
        self
    }

    pub(crate) fn with_sample_interval(mut self, min: Duration) -> Self {
        self.min_sample_interval = min;
        self
    }

    pub(crate) fn with_topic_delete_timeout(mut self, timeout: Duration) -> Self {
        self.topic_delete_timeout = timeout;
        self
    }

    pub(crate) fn record_outcome(&self, tws: &TwitterStream, failed: bool) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = f.entry(key(tws)).or_insert(0);
            *n += 1;
            *n
        } else {
            f.remove(&key(tws));
            0
        }
    }

    /// Whether this process applied the Deployment at exactly its current
    /// generation: nobody changed its spec since.
    pub(crate) fn applied_as_is(&self, ns: &str, d: &ChildDeployment) -> bool {
        let key = (ns.to_owned(), d.metadata.name.clone().unwrap_or_default());
        let applied = self
            .applied_generations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        d.metadata.generation.is_some() && applied.get(&key) == d.metadata.generation.as_ref()
    }

    /// The stream's last throughput sample, and whether the next is due at
    /// `now_ms` (every stream is sampled once per refresh interval). A stream
    /// seen for the first time is first sampled an interval later: a new
    /// stream has nothing to measure yet, and 1,000 streams created at once
    /// made 1,000 clients in the middle of their first reconciles (the
    /// operator benchmark's time ratio went from under 1 to 1.49, its peak
    /// RSS to 37.0 MB, 2026-11-28).
    pub(crate) fn last_sample(&self, tws: &TwitterStream, now_ms: i64) -> (Option<Sample>, bool) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let interval = self.refresh_interval(samples.len());
        let sampled = samples.entry(key(tws)).or_insert(Sampled {
            at_ms: now_ms,
            ..Sampled::default()
        });
        let due = now_ms - sampled.at_ms >= interval.as_millis() as i64;
        (sampled.last, due)
    }

    pub(crate) fn remember_sample(&self, tws: &TwitterStream, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let sampled = samples.entry(key(tws)).or_default();
        sampled.at_ms = sample.at_ms;
        sampled.last = Some(sample);
    }

    /// A sample that failed: the next is due an interval later, so
    /// unreachable brokers cost one wait per interval, not one per reconcile.
    pub(crate) fn sample_failed(&self, tws: &TwitterStream, now_ms: i64) {
        if let Some(s) = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key(tws))
        {
            s.at_ms = now_ms;
        }
    }

    /// Runs `decide` on the stream's autoscaler state.
    pub(crate) fn autoscaler<R>(
        &self,
        tws: &TwitterStream,
        decide: impl FnOnce(&mut autoscale::State) -> R,
    ) -> R {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        decide(&mut samples.entry(key(tws)).or_default().autoscaler)
    }

    /// A deleted stream: its samples, autoscaler and metric series go.
    pub(crate) fn forget_samples(&self, tws: &TwitterStream) {
        let (namespace, name) = key(tws);
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.clone(), name.clone()));
        self.metrics
            .forget_stream(&StreamLabels { namespace, name });
    }

    /// Forgets the streams of `scope` (a namespace, or all) that are not
    /// in `present`: a stream without a finalizer is gone before any
    /// reconcile sees it deleted, and its series would stay forever (an
    /// alert on its last window delay would never resolve).
    pub(crate) fn forget_streams_except(
        &self,
        scope: Option<&str>,
        present: &HashSet<(String, String)>,
    ) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, String)> = samples
            .keys()
            .filter(|(ns, _)| scope.is_none_or(|s| s == ns))
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            samples.remove(&(namespace.clone(), name.clone()));
            self.metrics
                .forget_stream(&StreamLabels { namespace, name });
        }
    }

    /// How often streams are sampled now.
    pub(crate) fn sample_interval(&self) -> Duration {
        let streams = self.samples.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.refresh_interval(streams)
    }

    fn refresh_interval(&self, streams: usize) -> Duration {
        crate::throughput::refresh_interval(self.min_sample_interval, streams.max(1))
    }

    pub(crate) fn remember_applied(&self, ns: &str, d: &ChildDeployment) {
        if let (Some(name), Some(generation)) = (&d.metadata.name, d.metadata.generation) {
            self.applied_generations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((ns.to_owned(), name.clone()), generation);
        }
    }

    pub(crate) fn cached_deployment(&self, ns: &str, name: &str) -> Option<ChildDeployment> {
        let caches = self
            .deployment_caches
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let key = ObjectRef::<ChildDeployment>::new(name).within(ns);
        caches
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .and_then(|(_, store)| store.get(&key))
            .map(|d| (*d).clone())
    }

    pub(crate) fn topic_recently_checked(&self, req: &TopicRequest) -> bool {
        let checked = self
            .topics_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        checked
            .get(req)
            .is_some_and(|t| t.elapsed() < TOPIC_RECHECK)
    }

    pub(crate) fn topic_checked(&self, req: &TopicRequest, ok: bool) {
        let mut checked = self
            .topics_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ok {
            checked.insert(req.clone(), Instant::now());
        } else {
            checked.remove(req);
        }
    }
}
