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

{{/*
The collector's address, checked at render: the agent refuses to start (exit 2) without
one, and refuses plaintext to a collector that is not on loopback unless told. A chart
that rendered either would deploy agents that cannot start, so it fails here, naming
the value to set (values.schema.json refuses an empty address first).
*/}}
{{- define "rtbench-agent.collectorAddress" -}}
{{- $c := .Values.collector -}}
{{- $address := required "collector.address is required: set it to the collector's HOST:PORT (--set collector.address=monitor.lan:7070)" $c.address -}}
{{- $host := regexReplaceAll ":[0-9]+$" $address "" | trimPrefix "[" | trimSuffix "]" -}}
{{- $loopback := or (eq $host "localhost") (hasSuffix ".localhost" $host) (hasPrefix "127." $host) (eq $host "::1") -}}
{{- if not (or $loopback $c.insecure $c.tls.caSecret) -}}
{{- fail (printf "collector.address %s is not on loopback: set collector.tls.caSecret (TLS, a Secret with the collector's CA) or collector.insecure=true (plaintext on a trusted network); otherwise every agent exits with \"not on loopback\"" $address) -}}
{{- end -}}
{{- $address -}}
{{- end -}}
