{{/* The chart's name. */}}
{{- define "salve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: the release name, with the chart's unless it already contains it. */}}
{{- define "salve.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "salve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "salve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: salve
{{- end }}

{{/* Labels selecting Salve's pods. */}}
{{- define "salve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "salve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount Salve runs as. */}}
{{- define "salve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "salve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Salve's image reference. */}}
{{- define "salve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether Salve elects a leader ("true" or ""): asked, or more than one pod (a DaemonSet's
    pods each act on their own node, so never). */}}
{{- define "salve.leaderElect" -}}
{{- $replicas := 1 }}
{{- if eq .Values.mode "deployment" }}{{ $replicas = int .Values.replicas }}{{ end }}
{{- if eq .Values.mode "sidecar" }}{{ $replicas = int .Values.sidecar.app.replicas }}{{ end }}
{{- if and (ne .Values.mode "daemonset") (or .Values.leaderElection.enabled (gt $replicas 1)) }}true{{ end }}
{{- end }}

{{/* The policy ConfigMap's name. */}}
{{- define "salve.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "salve.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{/* The directory `salve run --playbooks` reads. */}}
{{- define "salve.playbooksDir" -}}
{{- if eq .Values.playbooks.source "bundled" }}/usr/share/salve/playbooks
{{- else if eq .Values.playbooks.source "configMap" }}/etc/salve/playbooks
{{- else }}{{ trimSuffix "/" (printf "/git/current/%s" (trimPrefix "/" .Values.playbooks.gitSync.path)) }}
{{- end }}
{{- end }}

{{/* The pod security context of every pod (restricted Pod Security Standard). */}}
{{- define "salve.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The security context of every container of the chart's own (restricted). */}}
{{- define "salve.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Salve's container. */}}
{{- define "salve.container" -}}
- name: salve
  image: {{ include "salve.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - run
    - --playbooks
    - {{ include "salve.playbooksDir" . }}
    - --policy
    - /etc/salve/policy/policy.yaml
    - --journal
    - /var/lib/salve/journal.db
    - --listen
    - 0.0.0.0:{{ .Values.api.port }}
    - --log-format
    - {{ .Values.logFormat }}
    {{- with .Values.prometheus.url }}
    - --prometheus
    - {{ . }}
    {{- end }}
    {{- if include "salve.leaderElect" . }}
    - --leader-elect
    {{- else if ne .Values.mode "daemonset" }}
    # Each incident kept in a SalveIncident too: a rescheduled pod resumes what was in flight.
    - --cluster-state
    {{- end }}
    {{- if .Values.playbooks.resources }}
    - --playbook-resources
    {{- end }}
    {{- if eq .Values.mode "daemonset" }}
    - --node-local
    - --max-cordoned
    - {{ .Values.daemonset.maxCordoned | quote }}
    {{- end }}
    {{- if eq .Values.mode "sidecar" }}
    - --namespace
    # Its own namespace (the downward API's, below), as the Role is.
    - $(POD_NAMESPACE)
    {{- end }}
    {{- if .Values.api.tokenSecret }}
    - --api-token-file
    - /var/run/secrets/salve/api/tokens
    {{- else if and .Values.api.kubernetesAuth.enabled (ne .Values.mode "sidecar") }}
    - --api-auth
    - kubernetes{{ with .Values.api.kubernetesAuth.audience }}:{{ . }}{{ end }}
    {{- end }}
    {{- if .Values.api.webhookTokenSecret }}
    - --webhook-token-file
    - /var/run/secrets/salve/webhook/token
    {{- end }}
    {{- with .Values.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    {{- if include "salve.leaderElect" . }}
    # Where the other replicas reach this one (written on the Lease while it leads): a
    # follower's Alertmanager webhook relays each payload to the leader.
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    {{- end }}
    {{- if eq .Values.mode "daemonset" }}
    - name: SALVE_NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    {{- end }}
    # The WASM steps' compile cache (the root file system is read-only).
    - name: XDG_CACHE_HOME
      value: /var/cache
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ .Values.api.port }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: 2
    failureThreshold: 60
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    periodSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- include "salve.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - {name: policy, mountPath: /etc/salve/policy, readOnly: true}
    - {name: journal, mountPath: /var/lib/salve}
    - {name: cache, mountPath: /var/cache}
    - {name: tmp, mountPath: /tmp}
    {{- if eq .Values.playbooks.source "configMap" }}
    - {name: playbooks, mountPath: /etc/salve/playbooks, readOnly: true}
    {{- else if eq .Values.playbooks.source "gitSync" }}
    - {name: git, mountPath: /git, readOnly: true}
    {{- end }}
    {{- if .Values.api.tokenSecret }}
    - {name: api-tokens, mountPath: /var/run/secrets/salve/api, readOnly: true}
    {{- end }}
    {{- if .Values.api.webhookTokenSecret }}
    - {name: webhook-token, mountPath: /var/run/secrets/salve/webhook, readOnly: true}
    {{- end }}
    {{- if .Values.advisor.apiKeySecret }}
    - {name: llm-key, mountPath: /var/run/secrets/llm, readOnly: true}
    {{- end }}
{{- end }}

{{/* The git-sync container: `oneTime` for the init-container form. */}}
{{- define "salve.gitSync" -}}
{{- $root := .root }}
{{- $git := $root.Values.playbooks.gitSync }}
- name: {{ if .oneTime }}git-sync-init{{ else }}git-sync{{ end }}
  image: {{ printf "%s:%s" $git.image.repository $git.image.tag }}
  imagePullPolicy: {{ $git.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  args:
    - --repo={{ required "playbooks.gitSync.repo is required with playbooks.source gitSync" $git.repo }}
    - --ref={{ $git.ref }}
    - --root=/git
    - --link=current
    - --depth={{ $git.depth }}
    {{- if .oneTime }}
    - --one-time
    {{- else }}
    - --period={{ $git.period }}
    - --http-bind=:{{ $git.httpPort }}
    {{- end }}
    {{- with $git.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    # git-sync's HOME (for git's configuration) is /tmp.
    - name: HOME
      value: /tmp
    {{- with $git.auth.secretName }}
    - name: GITSYNC_USERNAME
      valueFrom: {secretKeyRef: {name: {{ . }}, key: username}}
    - name: GITSYNC_PASSWORD
      valueFrom: {secretKeyRef: {name: {{ . }}, key: password}}
    {{- end }}
  {{- if not .oneTime }}
  ports:
    - name: git-sync
      containerPort: {{ $git.httpPort }}
      protocol: TCP
  {{- if .native }}
  # Salve starts once the first sync is done: git-sync's `/` answers 200 from then on.
  startupProbe:
    httpGet: {path: /, port: git-sync}
    periodSeconds: 2
    failureThreshold: 150
  {{- end }}
  livenessProbe:
    httpGet: {path: /, port: git-sync}
    periodSeconds: 30
    failureThreshold: 5
  {{- end }}
  resources:
    {{- toYaml $git.resources | nindent 4 }}
  securityContext:
    {{- include "salve.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    - {name: git, mountPath: /git}
    - {name: git-tmp, mountPath: /tmp}
{{- end }}

{{/* git-sync as init containers: the native sidecar, or a one-time sync. */}}
{{- define "salve.gitSyncInit" -}}
{{- if eq .Values.playbooks.source "gitSync" }}
{{- if .Values.playbooks.gitSync.nativeSidecar }}
{{- include "salve.gitSync" (dict "root" . "native" true) }}
{{- else }}
{{- include "salve.gitSync" (dict "root" . "oneTime" true) }}
{{- end }}
{{- end }}
{{- end }}

{{/* git-sync as a regular container (when not a native sidecar). */}}
{{- define "salve.gitSyncContainer" -}}
{{- if and (eq .Values.playbooks.source "gitSync") (not .Values.playbooks.gitSync.nativeSidecar) }}
{{- include "salve.gitSync" (dict "root" .) }}
{{- end }}
{{- end }}

{{/* The volumes Salve (and git-sync) mount. */}}
{{- define "salve.volumes" -}}
- name: policy
  configMap:
    name: {{ include "salve.policyConfigMap" . }}
- {name: journal, emptyDir: {}}
- {name: cache, emptyDir: {}}
- {name: tmp, emptyDir: {}}
{{- if eq .Values.playbooks.source "configMap" }}
- name: playbooks
  configMap:
    name: {{ default (printf "%s-playbooks" (include "salve.fullname" .)) .Values.playbooks.configMap.name }}
{{- else if eq .Values.playbooks.source "gitSync" }}
- {name: git, emptyDir: {}}
- {name: git-tmp, emptyDir: {}}
{{- end }}
{{- with .Values.api.tokenSecret }}
- name: api-tokens
  secret: {secretName: {{ . }}}
{{- end }}
{{- with .Values.api.webhookTokenSecret }}
- name: webhook-token
  secret: {secretName: {{ . }}}
{{- end }}
{{- with .Values.advisor.apiKeySecret }}
- name: llm-key
  secret: {secretName: {{ . }}}
{{- end }}
{{- end }}

{{/* Scheduling settings shared by Salve's pods. */}}
{{- define "salve.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
