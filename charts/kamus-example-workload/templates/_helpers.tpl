{{- define "example.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "example.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "example.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "example.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The same hardened container settings for the init container and the app. */}}
{{- define "example.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The decryptor's URL: kamusUrl, or the Service of release `kamus` in namespace `kamus`. */}}
{{- define "example.kamusUrl" -}}
{{- default (ternary "https://kamus-decryptor.kamus.svc" "http://kamus-decryptor.kamus.svc" .Values.tls.enabled) .Values.kamusUrl -}}
{{- end -}}
