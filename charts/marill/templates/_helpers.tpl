{{/* Names */}}
{{- define "marill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "marill.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "provider") */}}
{{- define "marill.componentName" -}}
{{- printf "%s-%s" (include "marill.fullname" .root) .component | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "marill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "marill.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels */}}
{{- define "marill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "marill.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "marill.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "marill.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: marill
{{- end }}

{{/* Image of a component: its own fields over the global image */}}
{{- define "marill.image" -}}
{{- $c := index .root.Values .component }}
{{- $repo := default .root.Values.image.repository $c.image.repository }}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) $c.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "marill.pullPolicy" -}}
{{- $c := index .root.Values .component }}
{{- default .root.Values.image.pullPolicy $c.image.pullPolicy }}
{{- end }}

{{/* The key files each component needs (docs/runbook.md; every process also reads its own .pub) */}}
{{- define "marill.keyFiles" -}}
{{- $files := dict
  "coordinator" (list "coordinator.key" "coordinator.pub" "provider.pub" "helper.pub")
  "provider" (list "provider.key" "provider.pub" "provider.seal.key" "provider.seal.pub" "helper.pub" "dealer.pub" "coordinator.pub")
  "helper" (list "helper.key" "helper.pub" "helper.seal.key" "helper.seal.pub" "provider.pub" "dealer.pub" "coordinator.pub")
  "dealer" (list "dealer.key" "dealer.pub" "provider.pub" "helper.pub") }}
{{- index $files .component | toJson }}
{{- end }}

{{- define "marill.keysSecretName" -}}
{{- $c := index .root.Values .component }}
{{- default (printf "%s-keys" (include "marill.componentName" .)) $c.keys.existingSecret }}
{{- end }}

{{/*
Host of pair member `index` of `target` (provider, helper, dealer): the template value (tpl,
`{index}` replaced) or this release's StatefulSet pod DNS name. `index` may be a number or
"$(MARILL_POD_INDEX)" (expanded by the kubelet from the pod's env).
Call with (dict "root" $ "target" "provider" "template" "..." "index" 0)
*/}}
{{- define "marill.host" -}}
{{- if .template }}
{{- tpl .template .root | replace "{index}" (toString .index) }}
{{- else }}
{{- $svc := include "marill.componentName" (dict "root" .root "component" .target) }}
{{- printf "%s-%s.%s.%s.svc.%s" $svc (toString .index) $svc .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}
{{- end }}

{{/* Number of pairs the coordinator drives */}}
{{- define "marill.pairCount" -}}
{{- $c := .Values.coordinator.pairs }}
{{- if not (kindIs "invalid" $c.count) }}
{{- $c.count }}
{{- else if .Values.provider.autoscaling.enabled }}
{{- .Values.provider.autoscaling.maxReplicas }}
{{- else }}
{{- .Values.provider.replicaCount }}
{{- end }}
{{- end }}

{{/* The rendered config file of a component: its `config` plus what the chart manages */}}
{{- define "marill.config" -}}
{{- $v := .root.Values }}
{{- $c := index $v .component }}
{{- $managed := dict "keys" "/etc/marill/keys" "metrics_addr" (printf "0.0.0.0:%v" $c.metrics.port) }}
{{- if eq .component "coordinator" }}
{{- $pairs := list }}
{{- range $i, $_ := until (int (include "marill.pairCount" .root)) }}
{{- $p := include "marill.host" (dict "root" $.root "target" "provider" "template" $c.pairs.providerHostTemplate "index" $i) }}
{{- $h := include "marill.host" (dict "root" $.root "target" "helper" "template" $c.pairs.helperHostTemplate "index" $i) }}
{{- $pairs = append $pairs (printf "tcp://%s:%v,tcp://%s:%v" $p $v.provider.ports.control $h $v.helper.ports.control) }}
{{- end }}
{{- $_ := set $managed "pairs" $pairs }}
{{- else if eq .component "dealer" }}
{{- $_ := set $managed "provider_endpoint" (printf "tcp://0.0.0.0:%v" $c.ports.provider) }}
{{- $_ := set $managed "helper_endpoint" (printf "tcp://0.0.0.0:%v" $c.ports.helper) }}
{{- else }}
{{- $_ := set $managed "role" .component }}
{{- $_ := set $managed "control_endpoint" (printf "tcp://0.0.0.0:%v" $c.ports.control) }}
{{- if eq .component "provider" }}
{{- $_ := set $managed "peer_endpoint" (printf "tcp://0.0.0.0:%v" $c.ports.peer) }}
{{- end }}
{{- end }}
{{- merge $managed (deepCopy $c.config) | toYaml }}
{{- end }}

{{/* Per-pod command-line arguments (the pod's pair index comes from the env, expanded by the kubelet) */}}
{{- define "marill.args" -}}
{{- $v := .root.Values }}
{{- $c := index $v .component }}
{{- $args := list }}
{{- if eq .component "coordinator" }}
{{- $args = list "coordinator" }}
{{- else if eq .component "dealer" }}
{{- $args = list "dealer" }}
{{- else }}
{{- $args = list "worker" }}
{{- end }}
{{- $args = concat $args (list "--config" (printf "/etc/marill/%s.yaml" .component)) }}
{{- $idx := "$(MARILL_POD_INDEX)" }}
{{- if eq .component "helper" }}
{{- $p := include "marill.host" (dict "root" .root "target" "provider" "template" $c.peer.providerHostTemplate "index" $idx) }}
{{- $args = concat $args (list "--peer-endpoint" (printf "tcp://%s:%v" $p $v.provider.ports.peer)) }}
{{- end }}
{{- if or (eq .component "provider") (eq .component "helper") }}
{{- $d := include "marill.host" (dict "root" .root "target" "dealer" "template" $c.dealer.hostTemplate "index" $idx) }}
{{- $args = concat $args (list "--dealer-endpoint" (printf "tcp://%s:%v" $d (index $v.dealer.ports .component))) }}
{{- end }}
{{- concat $args $c.extraArgs | toYaml }}
{{- end }}

{{/* Container ports of a component: metrics plus what it binds */}}
{{- define "marill.ports" -}}
{{- $c := index .root.Values .component }}
- name: metrics
  containerPort: {{ $c.metrics.port }}
  protocol: TCP
{{- range $name, $port := $c.ports }}
- name: {{ $name }}
  containerPort: {{ $port }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* Pod template of a component; call with (dict "root" $ "component" "provider") */}}
{{- define "marill.podTemplate" -}}
{{- $root := .root }}
{{- $c := index $root.Values .component }}
metadata:
  labels:
    {{- include "marill.labels" . | nindent 4 }}
    {{- with $c.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "marill.config" . | sha256sum }}
    {{- if and (not $c.keys.existingSecret) $c.keys.files }}
    checksum/keys: {{ toJson $c.keys.files | sha256sum }}
    {{- end }}
    {{- with $c.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "marill.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- if has .component (list "provider" "helper") }}
  {{- /* a worker drains on SIGTERM: its open sessions run to their end first */}}
  terminationGracePeriodSeconds: {{ add (int (default 600 $c.config.drain_timeout_s)) 30 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "marill.image" . | quote }}
      imagePullPolicy: {{ include "marill.pullPolicy" . }}
      args:
        {{- include "marill.args" . | nindent 8 }}
      env:
        {{- if ne .component "coordinator" }}
        - name: MARILL_POD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with $c.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- include "marill.ports" . | nindent 8 }}
      startupProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 10
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 20
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 10
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      {{- with $c.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: /etc/marill/{{ .component }}.yaml
          subPath: {{ .component }}.yaml
          readOnly: true
        - name: keys
          mountPath: /etc/marill/keys
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- with $c.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "marill.componentName" . }}-config
    - name: keys
      secret:
        secretName: {{ include "marill.keysSecretName" . }}
        defaultMode: 0440
        items:
          {{- range include "marill.keyFiles" . | fromJsonArray }}
          - key: {{ . }}
            path: {{ . }}
          {{- end }}
    - name: tmp
      emptyDir: {}
    {{- with $c.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
