{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "kubenas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless the release already contains it. */}}
{{- define "kubenas.fullname" -}}
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

{{- define "kubenas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "kubenas.labels" -}}
helm.sh/chart: {{ include "kubenas.chart" . }}
{{ include "kubenas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubenas
{{- end }}

{{/* The operator pod's selector labels (immutable once installed). */}}
{{- define "kubenas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubenas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubenas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubenas.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubenas.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's permissions, identical whether granted cluster-wide (ClusterRole) or per
namespace (Role). Exactly the calls it makes (operator/kubenas/controller/kube.py and kopf):
kopf lists and watches Experiments, Trials, Jobs and Pods and posts Events; the operator
reads Experiments, creates Trials, Jobs, Events and the export ConfigMap, patches the status
subresources, and deletes the Jobs of stopped trials. kopf's resource scanning is disabled,
so no CustomResourceDefinition or Namespace access; no finalizers, no pods/log, no secrets.
*/}}
{{- define "kubenas.rules" -}}
- apiGroups: [kubenas.io]
  resources: [experiments]
  verbs: [get, list, watch]
- apiGroups: [kubenas.io]
  resources: [experiments/status]
  verbs: [patch]
- apiGroups: [kubenas.io]
  resources: [trials]
  verbs: [get, list, watch, create]
- apiGroups: [kubenas.io]
  resources: [trials/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, delete]
{{- end }}

{{/* Selector of the operator's own kube-state-metrics / cAdvisor series. */}}
{{- define "kubenas.operatorDeploymentSelector" -}}
namespace="{{ .Release.Namespace }}", deployment="{{ include "kubenas.fullname" . }}"
{{- end }}
{{- define "kubenas.operatorPodSelector" -}}
namespace="{{ .Release.Namespace }}", pod=~"{{ include "kubenas.fullname" . }}-[a-z0-9]+-[a-z0-9]+", container="operator"
{{- end }}

{{/* Selector of the operator's own /metrics series (the job is the metrics Service's name). */}}
{{- define "kubenas.operatorMetricsSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "kubenas.fullname" . }}-metrics"
{{- end }}
