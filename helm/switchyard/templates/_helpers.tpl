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

{{/* The `helm test` pod, as a NetworkPolicy peer: let in wherever the
     peers are restricted. */}}
{{- define "switchyard.testPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "switchyard.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
      app.kubernetes.io/component: test
{{- end }}

{{/* The port /metrics is scraped on. */}}
{{- define "switchyard.metricsPortName" -}}
{{- if .Values.gateway.metricsPort }}metrics{{ else }}http{{ end }}
{{- end }}

{{/* A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1.5Gi, 536870912) in
     bytes. */}}
{{- define "switchyard.bytes" -}}
{{- $q := . -}}
{{- if kindIs "float64" $q }}{{ $q = printf "%.0f" $q }}{{ end -}}
{{- $q = toString $q -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([kKMGT]i?)?$" $q) }}
{{- fail (printf "resources.limits.memory: %q is not a memory quantity this chart reads (e.g. 512Mi, 1Gi, 1G)" $q) }}
{{- end -}}
{{- $units := dict "" 1 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $number := regexFind "^[0-9.]+" $q | float64 -}}
{{- $unit := regexReplaceAll "^[0-9.]+" $q "" -}}
{{- printf "%.0f" (mulf $number (get $units $unit)) -}}
{{- end }}

{{/* The memory limit of the gateway container in bytes; "" without one. */}}
{{- define "switchyard.memoryLimit" -}}
{{- with (.Values.resources.limits | default dict).memory }}{{ include "switchyard.bytes" . }}{{ end -}}
{{- end }}

{{/* Connections one pod accepts: gateway.maxConnections, else what fits
     the memory limit ((limit − base) / bytes per connection), else ""
     (the gateway's default). */}}
{{- define "switchyard.maxConnections" -}}
{{- $sizing := .Values.gateway.sizing -}}
{{- $limit := include "switchyard.memoryLimit" . -}}
{{- if .Values.gateway.maxConnections -}}
{{- int64 .Values.gateway.maxConnections -}}
{{- else if $limit -}}
{{- $free := sub (int64 $limit) (mul (int64 $sizing.baseMemoryMiB) 1048576) -}}
{{- if le $free 0 }}
{{- fail (printf "resources.limits.memory (%s) leaves nothing for connections above gateway.sizing.baseMemoryMiB (%d MiB)" (toString .Values.resources.limits.memory) (int64 $sizing.baseMemoryMiB)) }}
{{- end -}}
{{- div $free (int64 $sizing.bytesPerConnection) -}}
{{- end -}}
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
{{- $sizing := .Values.gateway.sizing }}
{{- $limit := include "switchyard.memoryLimit" . }}
{{- if and .Values.gateway.maxConnections $limit }}
{{- $needed := add (mul (int64 $sizing.baseMemoryMiB) 1048576) (mul (int64 .Values.gateway.maxConnections) (int64 $sizing.bytesPerConnection)) }}
{{- if gt $needed (int64 $limit) }}
{{- $fits := div (sub (int64 $limit) (mul (int64 $sizing.baseMemoryMiB) 1048576)) (int64 $sizing.bytesPerConnection) }}
{{- fail (printf "gateway.maxConnections (%d) needs about %d MiB at gateway.sizing.bytesPerConnection (%d) over %d MiB, more than resources.limits.memory (%s): the pod would be OOM-killed, without a drain, before it refuses a connection. Set gateway.maxConnections to at most %d (or leave it empty to derive it), or raise the memory limit" (int64 .Values.gateway.maxConnections) (div $needed 1048576) (int64 $sizing.bytesPerConnection) (int64 $sizing.baseMemoryMiB) (toString .Values.resources.limits.memory) $fits) }}
{{- end }}
{{- end }}
{{- if hasKey .Values.gateway.extraEnv "SWITCHYARD_LIMITS__MAX_CONNECTIONS" }}
{{- fail "gateway.extraEnv: set the connection cap with gateway.maxConnections (checked against the memory limit), not SWITCHYARD_LIMITS__MAX_CONNECTIONS" }}
{{- end }}
{{- with .Values.autoscaling.targetConnectionsPerPod }}
{{- $cap := include "switchyard.maxConnections" $ | default "100000" }}
{{- if ge (int64 .) (int64 $cap) }}
{{- fail (printf "autoscaling.targetConnectionsPerPod (%d) must be below the connection cap per pod (%s, gateway.maxConnections): pods would refuse connections before the HPA adds any" (int64 .) $cap) }}
{{- end }}
{{- end }}
{{- if and .Values.gateway.metricsPort (eq (int .Values.gateway.metricsPort) (int .Values.gateway.port)) }}
{{- fail "gateway.metricsPort must differ from gateway.port (leave it empty to serve /metrics on the main port only)" }}
{{- end }}
{{- end }}
