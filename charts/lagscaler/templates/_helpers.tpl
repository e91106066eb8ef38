{{- define "lagscaler.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lagscaler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lagscaler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lagscaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lagscaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lagscaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lagscaler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lagscaler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lagscaler.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "secret" -}}
{{- required "certificates.secretName is required when certificates.mode=secret" .Values.certificates.secretName -}}
{{- else -}}
{{- printf "%s-serving-cert" (include "lagscaler.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "lagscaler.policyConfigMap" -}}
{{- default (printf "%s-policies" (include "lagscaler.fullname" .)) .Values.existingPolicyConfigMap -}}
{{- end -}}

{{/* The serving certificate and its CA, generated once and then reused from the live Secret. */}}
{{- define "lagscaler.generatedCert" -}}
{{- $secretName := include "lagscaler.tlsSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") -}}
ca.crt: {{ index $existing.data "ca.crt" }}
tls.crt: {{ index $existing.data "tls.crt" }}
tls.key: {{ index $existing.data "tls.key" }}
{{- else -}}
{{- $svc := include "lagscaler.fullname" . -}}
{{- $days := int .Values.certificates.generatedValidityDays -}}
{{- $ca := genCA (printf "%s-ca" $svc) $days -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns $days $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/* The leader Lease of the handover controllers, in the release namespace. */}}
{{- define "lagscaler.handoverLeaseName" -}}
{{- default (printf "%s-handover" (include "lagscaler.fullname" .)) .Values.handover.leaseName -}}
{{- end -}}
