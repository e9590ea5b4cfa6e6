{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "twitterstream-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
Full resource name. At most 52 characters, so that "<fullname>-metrics" (a
Service, hence a 63-character DNS label) and "<fullname>-test" (a Job) fit.
*/}}
{{- define "twitterstream-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the release
namespace is part of it, so releases of the same name in two namespaces do not
overwrite each other's.
*/}}
{{- define "twitterstream-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "twitterstream-operator.fullname" .) }}
{{- end }}

{{- define "twitterstream-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "twitterstream-operator.labels" -}}
helm.sh/chart: {{ include "twitterstream-operator.chart" . }}
app.kubernetes.io/name: {{ include "twitterstream-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: twitterstream
{{- end }}

{{/*
Selector of the operator pods. The component label keeps the `helm test` pod
(same name and instance) out of the Deployment's and the Service's selection.
These labels are immutable in a Deployment's selector: do not change them.
*/}}
{{- define "twitterstream-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twitterstream-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of the `helm test` pod; the NetworkPolicy lets it reach /readyz.
*/}}
{{- define "twitterstream-operator.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "twitterstream-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{- define "twitterstream-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "twitterstream-operator.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" }}
{{- end }}
{{- end }}

{{- define "twitterstream-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when the operator runs with --leader-elect: asked for, or needed because
several replicas would otherwise reconcile the same objects at once.
*/}}
{{- define "twitterstream-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/*
Name of the leader-election Lease (one per release, in the release namespace).
*/}}
{{- define "twitterstream-operator.leaseName" -}}
{{- include "twitterstream-operator.fullname" . }}
{{- end }}

{{/*
The operator's command-line arguments, one `--flag=value` per item (so a
caller can replace one by its prefix). Hashed into the pod template's
checksum/args annotation.
*/}}
{{- define "twitterstream-operator.args" -}}
- --worker-image={{ .Values.workerImage }}
{{- with .Values.allowedImages }}
- --allowed-images={{ join "," . }}
{{- end }}
{{- with .Values.xApiBaseUrl }}
- --x-api-base-url={{ . }}
{{- end }}
{{- with .Values.kafka }}
{{- if ne .securityProtocol "plaintext" }}
- --kafka-security-protocol={{ .securityProtocol }}
{{- end }}
{{- $dir := "/var/run/secrets/twitterstream.io/kafka" }}
{{- with .caKey }}
- --kafka-ca-file={{ $dir }}/{{ . }}
{{- end }}
{{- if .certKey }}
- --kafka-cert-file={{ $dir }}/{{ .certKey }}
- --kafka-key-file={{ $dir }}/{{ .keyKey }}
{{- end }}
{{- with .saslMechanism }}
- --kafka-sasl-mechanism={{ . }}
{{- end }}
{{- with .saslUsername }}
- --kafka-sasl-username={{ . }}
{{- end }}
{{- with .saslPasswordKey }}
- --kafka-sasl-password-file={{ $dir }}/{{ . }}
{{- end }}
{{- with .oauthTokenEndpoint }}
- --kafka-oauth-token-endpoint={{ . }}
{{- end }}
{{- with .oauthScope }}
- --kafka-oauth-scope={{ . }}
{{- end }}
{{- with .oauthCaKey }}
- --kafka-oauth-ca-file={{ $dir }}/{{ . }}
{{- end }}
{{- end }}
{{- with .Values.watchNamespaces }}
- --watch-namespaces={{ join "," . }}
{{- end }}
- --http-addr=0.0.0.0:8080
- --log-format={{ .Values.logFormat }}
- --kafka-timeout-seconds={{ int .Values.kafkaTimeoutSeconds }}
{{- if include "twitterstream-operator.leaderElect" . }}
- --leader-elect
- --lease-name={{ include "twitterstream-operator.leaseName" . }}
{{- end }}
{{- end }}

{{/*
RBAC rules of the operator in the namespaces it watches (a ClusterRole when it
watches all of them). Exactly the calls the operator makes; nothing on Secrets
or ConfigMaps: the workers read the X API credentials Secret themselves.
*/}}
{{- define "twitterstream-operator.rules" -}}
# Watches TwitterStreams (the controller's primary resource) and merge-patches
# its topic finalizer onto them.
- apiGroups: ["twitterstream.io"]
  resources: ["twitterstreams"]
  verbs: ["get", "list", "watch", "patch"]
# Writes status.conditions and the observed counts.
- apiGroups: ["twitterstream.io"]
  resources: ["twitterstreams/status"]
  verbs: ["get", "patch"]
# Sets spec.consumer.replicas when spec.consumer.autoscaling asks it to, as
# `kubectl scale` and an HPA do.
- apiGroups: ["twitterstream.io"]
  resources: ["twitterstreams/scale"]
  verbs: ["patch"]
# The producer/consumer Deployments carry an owner reference with
# blockOwnerDeletion, which the API server only allows to whoever may update
# the owner's finalizers.
- apiGroups: ["twitterstream.io"]
  resources: ["twitterstreams/finalizers"]
  verbs: ["update"]
# Server-side applies the producer/consumer Deployments and keeps a watch cache
# of them (labelled app.kubernetes.io/managed-by=twitterstream-operator).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Server-side applies the per-stream NetworkPolicies (spec.networkPolicy), and
# deletes them when the spec no longer asks for them.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "delete"]
# Watches the workers' pods to report pod problems (crash loops, image pulls)
# in the TwitterStream's conditions.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Reads the kubelet's Warning events about those pods (e.g. FailedMount of a
# missing credentials Secret) to explain why they are not ready.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# Records its own Events on TwitterStreams (created, then patched as a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
