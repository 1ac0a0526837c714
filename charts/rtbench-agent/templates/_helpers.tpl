{{/* The release's full name: the release name, or <release>-rtbench-agent. */}}
{{- define "rtbench-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rtbench-agent.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "rtbench-agent.fullname" .) -}}
{{- end -}}

{{- define "rtbench-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rtbench-agent.labels" -}}
{{ include "rtbench-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The parent directory of the containerd socket: mounted, not the socket itself. */}}
{{- define "rtbench-agent.containerdDir" -}}
{{- dir .Values.containerd.socket -}}
{{- end -}}
