{{/*
The names and labels rtctl/workload.py computes, in template form. Keep the two in
step: tests/deploy/test_charts.py renders this chart and compares it with rtctl's
Deployment for the same inputs.
*/}}

{{/* The run id: runId, else the release name. */}}
{{- define "http-server-bench.runId" -}}
{{- $runId := .Values.runId | default .Release.Name -}}
{{- if or (gt (len $runId) 63) (not (regexMatch "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$" $runId)) -}}
{{- fail (printf "runId %q must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit" $runId) -}}
{{- end -}}
{{- $runId -}}
{{- end -}}

{{/* The runtime class label value: "default" when no RuntimeClass is asked for. */}}
{{- define "http-server-bench.runtimeClass" -}}
{{- .Values.runtimeClass | default "default" -}}
{{- end -}}

{{/*
The Deployment's name, as rtctl's deployment_name(): rtbench-<run id>; when the id had
to be lower-cased, had '_' or '.' mapped to '-', or was too long, the name is cut to 54
characters, stripped of trailing '-', and "-<first 8 hex of sha256(run id)>" appended.
*/}}
{{- define "http-server-bench.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else -}}
{{- $runId := include "http-server-bench.runId" . -}}
{{- $plain := printf "rtbench-%s" $runId -}}
{{- $name := $plain | lower | replace "_" "-" | replace "." "-" -}}
{{- if and (eq $name $plain) (le (len $name) 63) -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "-+$" (trunc 54 $name) "") (trunc 8 (sha256sum $runId)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels of the Deployment and its pods: extra labels first, rtbench's win. */}}
{{- define "http-server-bench.labels" -}}
{{- $runtimeClass := include "http-server-bench.runtimeClass" . -}}
{{- $labels := dict -}}
{{- range $key, $value := .Values.labels -}}
{{- $_ := set $labels $key (toString $value) -}}
{{- end -}}
{{- $_ := set $labels "app" "c-http-server" -}}
{{- $_ := set $labels "test_id" .Values.testId -}}
{{- $_ := set $labels "runtime_class" $runtimeClass -}}
{{- $_ := set $labels "variant" (.Values.variant | default $runtimeClass) -}}
{{- $_ := set $labels "rtbench.io/run-id" (include "http-server-bench.runId" .) -}}
{{- toYaml $labels -}}
{{- end -}}
