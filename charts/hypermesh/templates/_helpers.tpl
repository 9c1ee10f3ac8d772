{{/* Names, labels and shared fragments of every template. */}}

{{- define "hypermesh.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hypermesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hypermesh.apiserver.fullname" -}}
{{- printf "%s-apiserver" (include "hypermesh.fullname" .) -}}
{{- end -}}

{{- define "hypermesh.scheduler.fullname" -}}
{{- printf "%s-scheduler" (include "hypermesh.fullname" .) -}}
{{- end -}}

{{- define "hypermesh.node.fullname" -}}
{{- printf "%s-node" (include "hypermesh.fullname" .) -}}
{{- end -}}

{{- define "hypermesh.encryptionKeySecret" -}}
{{- default (printf "%s-encryption-key" (include "hypermesh.apiserver.fullname" .)) .Values.apiserver.encryptionKeySecret -}}
{{- end -}}

{{- define "hypermesh.schedulerConfigSecret" -}}
{{- default (printf "%s-scheduler-config" (include "hypermesh.fullname" .)) .Values.scheduler.configSecret -}}
{{- end -}}

{{- define "hypermesh.joinSecret" -}}
{{- default (printf "%s-join" (include "hypermesh.fullname" .)) .Values.agent.joinSecret -}}
{{- end -}}

{{/* The apiserver's in-cluster address, as its certificate names it. */}}
{{- define "hypermesh.apiserver.host" -}}
{{- printf "%s.%s.svc" (include "hypermesh.apiserver.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "hypermesh.apiserver.url" -}}
{{- printf "https://%s:%v" (include "hypermesh.apiserver.host" .) .Values.service.port -}}
{{- end -}}

{{- define "hypermesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hypermesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "apiserver"). */}}
{{- define "hypermesh.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "hypermesh.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* An image reference: include with (list $ .Values.image.agent). */}}
{{- define "hypermesh.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s:%s" (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) | quote -}}
{{- end -}}

{{/* Security context of the control-plane containers: no root, nothing writable but volumes. */}}
{{- define "hypermesh.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
