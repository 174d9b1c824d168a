{{/* Names and labels shared by every template. */}}

{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ingress-controller
{{- end -}}

{{/* weir's command line, one flag per list item. */}}
{{- define "weir.args" -}}
- --http-listen=0.0.0.0:{{ .Values.ports.http }}
- --https-listen=0.0.0.0:{{ .Values.ports.https }}
- --admin-listen=0.0.0.0:{{ .Values.ports.admin }}
- --ingress-class={{ .Values.ingressClass.name }}
- --gateway-controller={{ .Values.gatewayAPI.controllerName }}
- --election-id={{ .Values.controller.electionId }}
- --election-namespace={{ .Release.Namespace }}
{{- if .Values.controller.publishService }}
- --publish-service={{ .Release.Namespace }}/{{ include "weir.fullname" . }}
{{- end }}
{{- with .Values.controller.watchNamespace }}
- --watch-namespace={{ . }}
{{- end }}
- --shutdown-delay={{ .Values.controller.shutdownDelaySeconds }}s
- --drain-timeout={{ .Values.controller.drainTimeoutSeconds }}s
{{- if gt (int .Values.controller.threads) 0 }}
- --threads={{ .Values.controller.threads }}
{{- end }}
- --log-format={{ .Values.controller.logFormat }}
- --log-level={{ .Values.controller.logLevel }}
{{- with .Values.controller.defaultCertificate }}
- --default-certificate={{ . }}
{{- end }}
{{- with .Values.controller.otlpEndpoint }}
- --otlp-endpoint={{ . }}
{{- end }}
{{- with .Values.controller.redisUrl }}
- --redis-url={{ . }}
{{- end }}
{{- if .Values.controller.endpointMetrics }}
- --endpoint-metrics
{{- end }}
{{- if .Values.fleet.enabled }}
- --fleet-listen=0.0.0.0:{{ .Values.fleet.port }}
- --fleet-advertise=$(POD_IP)
- --peers={{ include "weir.fullname" . }}-fleet.{{ .Release.Namespace }}.svc:{{ .Values.fleet.port }}
- --fleet-secret-file=/etc/weir/fleet/key
- --fleet-gossip-interval={{ .Values.fleet.gossipInterval }}
{{- end }}
{{- range .Values.controller.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
