{{/* Chart name, overridable. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; 63 characters at most (DNS label). */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object of the release. */}}
{{- define "switchyard.commonLabels" -}}
helm.sh/chart: {{ include "switchyard.chart" . }}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "switchyard.labels" -}}
{{ include "switchyard.commonLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* The component label keeps the built-in Redis out of the gateway's
     Service, ServiceMonitor and NetworkPolicy selections. */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "switchyard.redis.fullname" -}}
{{- printf "%s-redis" (include "switchyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchyard.redis.labels" -}}
{{ include "switchyard.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "switchyard.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given (it pins the image; the tag
     is ignored), else repository:tag. */}}
{{- define "switchyard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the credentials: the user's or the chart's. */}}
{{- define "switchyard.secretName" -}}
{{- default (include "switchyard.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* Whether any credential is given in values. */}}
{{- define "switchyard.hasCredentials" -}}
{{- if or .Values.auth.jwtSecret .Values.auth.apiKeys .Values.auth.tokens .Values.auth.password }}true{{ end }}
{{- end }}

{{/* The CIDRs whose X-Forwarded-For the gateway believes, comma-separated:
     gateway.trustedProxies plus, with the ingress on, the controller's. */}}
{{- define "switchyard.trustedProxies" -}}
{{- $proxies := .Values.gateway.trustedProxies }}
{{- if .Values.ingress.enabled }}
{{- $proxies = concat $proxies .Values.ingress.trustedProxies }}
{{- end }}
{{- $proxies | uniq | join "," }}
{{- end }}

{{/* The fewest pods the Deployment runs. */}}
{{- define "switchyard.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Whether the gateway has a Redis at all. */}}
{{- define "switchyard.hasRedis" -}}
{{- if or .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The Secret of the chart's Redis settings: the URL the gateway uses
     (redis.url, or the built-in Redis with its password) and the built-in
     Redis' password. Rendered when there is any of these to hold. */}}
{{- define "switchyard.redis.secretName" -}}
{{- printf "%s-redis" (include "switchyard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchyard.redis.hasSecret" -}}
{{- if or .Values.redis.url (and .Values.redis.enabled .Values.redis.auth.password) }}true{{ end }}
{{- end }}

{{/* The built-in Redis' password: Secret name and key. */}}
{{- define "switchyard.redis.passwordRef" -}}
{{- if .Values.redis.auth.existingSecret -}}
name: {{ .Values.redis.auth.existingSecret }}
key: {{ .Values.redis.auth.existingSecretKey }}
{{- else -}}
name: {{ include "switchyard.redis.secretName" . }}
key: redis-password
{{- end }}
{{- end }}

{{/* The port /metrics is scraped on. */}}
{{- define "switchyard.metricsPortName" -}}
{{- if .Values.gateway.metricsPort }}metrics{{ else }}http{{ end }}
{{- end }}

{{/* Settings that would produce a broken release fail the render instead. */}}
{{- define "switchyard.validate" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $needed := add (div (int .Values.gateway.drainDeadlineMs) 1000) (int .Values.lifecycle.preStopSleepSeconds) }}
{{- if le $grace $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed gateway.drainDeadlineMs/1000 + lifecycle.preStopSleepSeconds (%d): the pod would be killed while clients are still being drained" $grace $needed) }}
{{- end }}
{{- $replicas := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}{{ $replicas = int .Values.autoscaling.maxReplicas }}{{ end }}
{{- if and (gt $replicas 1) (not (include "switchyard.hasRedis" .)) }}
{{- fail "more than one replica needs Redis (redis.url, redis.existingSecret or redis.enabled): without it every pod is a separate gateway with its own sessions, presence and rate limits" }}
{{- end }}
{{- if and .Values.redis.enabled (not (or .Values.redis.auth.password .Values.redis.auth.existingSecret)) }}
{{- fail "redis.enabled: set redis.auth.password (URL-safe, at least 16 characters, e.g. `openssl rand -hex 24`) or redis.auth.existingSecret (with redis.auth.existingSecretKey): the built-in Redis needs a password, and the chart generates none" }}
{{- end }}
{{- if and .Values.redis.auth.password .Values.redis.auth.existingSecret }}
{{- fail "redis.auth.existingSecret is set: put the Redis password in that Secret, not in redis.auth.password" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis.enabled deploys the chart's own Redis: leave redis.url and redis.existingSecret empty, or disable it" }}
{{- end }}
{{- if not (or .Values.auth.existingSecret (include "switchyard.hasCredentials" .)) }}
{{- fail "no credentials: set auth.jwtSecret (at least 32 bytes, e.g. `openssl rand -hex 32`), auth.apiKeys, auth.tokens or auth.password, or name a Secret of yours in auth.existingSecret. The chart generates no secret itself: a value made up at render time would change on every render (helm template, Argo CD), restarting the pods and invalidating every token" }}
{{- end }}
{{- if and .Values.auth.existingSecret (include "switchyard.hasCredentials" .) }}
{{- fail "auth.existingSecret is set: put the credentials in that Secret, not in auth.jwtSecret / apiKeys / tokens / password" }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.requireTrustedProxies (not (include "switchyard.trustedProxies" .)) }}
{{- fail "ingress.enabled: set ingress.trustedProxies to the CIDR the ingress controller's pods connect from (the pod network, e.g. 10.244.0.0/16), or every client is the controller's one address to the per-IP rate limits and lock-outs; ingress.requireTrustedProxies=false accepts that" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.maxUnavailable) (kindIs "invalid" $pdb.minAvailable) }}
{{- fail "podDisruptionBudget: set maxUnavailable (e.g. 1) or minAvailable" }}
{{- end }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.maxUnavailable) (not (kindIs "string" $pdb.minAvailable)) (gt (int (include "switchyard.minReplicas" .)) 1) }}
{{- if ge (int $pdb.minAvailable) (int (include "switchyard.minReplicas" .)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below the replica count (%s): no pod could ever be evicted and node drains would block; prefer maxUnavailable: 1" (int $pdb.minAvailable) (include "switchyard.minReplicas" .)) }}
{{- end }}
{{- end }}
{{- if and .Values.gateway.metricsPort (eq (int .Values.gateway.metricsPort) (int .Values.gateway.port)) }}
{{- fail "gateway.metricsPort must differ from gateway.port (leave it empty to serve /metrics on the main port only)" }}
{{- end }}
{{- end }}
