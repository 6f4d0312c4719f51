{{/* Chart name, truncated to a DNS label. */}}
{{- define "kamus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix; components append "-encryptor" / "-decryptor", so keep room for them. */}}
{{- define "kamus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kamus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "kamus.labels" -}}
helm.sh/chart: {{ include "kamus.chart" . }}
app.kubernetes.io/name: {{ include "kamus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kamus
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kamus.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's resources: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.componentLabels" -}}
{{ include "kamus.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Name of one component's resources: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.componentName" -}}
{{- printf "%s-%s" (include "kamus.fullname" .root) .component -}}
{{- end -}}

{{- define "kamus.serviceAccountName" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.serviceAccount.create -}}
{{- default (include "kamus.componentName" .) $values.serviceAccount.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kamus.image" -}}
{{- $image := (index .root.Values .component).image -}}
{{- $repository := $image.repository -}}
{{- if $image.registry -}}
{{- $repository = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret this chart creates for the keys given in values (create.*). */}}
{{- define "kamus.keysSecretName" -}}
{{- printf "%s-keys" (include "kamus.fullname" .) -}}
{{- end -}}

{{/* Where the TLS Secret is mounted; gunicorn reads tls.crt and tls.key from it. */}}
{{- define "kamus.tlsDir" -}}
/etc/kamus/tls
{{- end -}}

{{/* The kubernetes.io/tls Secret of one component: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.tlsSecretName" -}}
{{- $tls := .root.Values.tls -}}
{{- default $tls.existingSecret (index $tls .component).existingSecret -}}
{{- end -}}

{{/* Name of the container and Service port: "https" with tls.enabled, "http" otherwise. */}}
{{- define "kamus.portName" -}}
{{- ternary "https" "http" (.Values.tls.enabled | default false) -}}
{{- end -}}

{{/* Port of one component's Service: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.servicePort" -}}
{{- $service := (index .root.Values .component).service -}}
{{- ternary $service.httpsPort $service.port (.root.Values.tls.enabled | default false) | int -}}
{{- end -}}

{{/* In-cluster URL of one component's Service: (dict "root" $ "component" "decryptor"). */}}
{{- define "kamus.serviceUrl" -}}
{{- printf "%s://%s.%s.svc:%s" (include "kamus.portName" .root) (include "kamus.componentName" .) .root.Release.Namespace (include "kamus.servicePort" .) -}}
{{- end -}}

{{- define "kamus.remoteProvider" -}}
{{- if ne .Values.provider "local" }}true{{ end -}}
{{- end -}}

{{- define "kamus.perServiceAccount" -}}
{{- if and (ne .Values.provider "local") (eq .Values.kms.keyMode "per-service-account") }}true{{ end -}}
{{- end -}}

{{/*
Every secret file the services read, as a YAML list: where it comes from (an existing Secret or
the chart's keys Secret), where it is mounted, the *_FILE variable that points at it, and which
components need it. Only files the configuration uses are listed.
*/}}
{{- define "kamus.secretFiles" -}}
{{- $keys := include "kamus.keysSecretName" . -}}
{{- if eq .Values.provider "local" }}
{{- $secret := default $keys .Values.keyring.existingSecret.name }}
{{- $key := ternary .Values.keyring.existingSecret.key "keyring.json" (ne .Values.keyring.existingSecret.name "") }}
- {volume: keyring, secret: {{ $secret | quote }}, key: {{ $key | quote }}, dir: /etc/kamus/keys/keyring, file: keyring.json, env: KAMUS_KEYRING_FILE, components: [encryptor, decryptor]}
{{- end }}
{{- $secret := default $keys .Values.auditKey.existingSecret.name }}
{{- $key := ternary .Values.auditKey.existingSecret.key "audit.key" (ne .Values.auditKey.existingSecret.name "") }}
- {volume: audit-key, secret: {{ $secret | quote }}, key: {{ $key | quote }}, dir: /etc/kamus/keys/audit, file: audit.key, env: KAMUS_AUDIT_KEY_FILE, components: [decryptor]}
{{- if include "kamus.perServiceAccount" . }}
{{- $secret := default $keys .Values.kms.namingKey.existingSecret.name }}
{{- $key := ternary .Values.kms.namingKey.existingSecret.key "naming.key" (ne .Values.kms.namingKey.existingSecret.name "") }}
- {volume: naming-key, secret: {{ $secret | quote }}, key: {{ $key | quote }}, dir: /etc/kamus/keys/naming, file: naming.key, env: KAMUS_KMS_NAMING_KEY_FILE, components: [encryptor, decryptor]}
{{- end }}
{{- if eq .Values.provider "pkcs11" }}
- {volume: pkcs11-pin, secret: {{ .Values.pkcs11.pin.existingSecret.name | quote }}, key: {{ .Values.pkcs11.pin.existingSecret.key | quote }}, dir: /etc/kamus/keys/pkcs11, file: pin, env: KAMUS_PKCS11_PIN_FILE, components: [encryptor, decryptor]}
{{- end }}
{{- if eq .Values.provider "vault" }}
- {volume: vault-token, secret: {{ .Values.vault.token.existingSecret.name | quote }}, key: {{ .Values.vault.token.existingSecret.key | quote }}, dir: /etc/kamus/keys/vault, file: token, env: KAMUS_VAULT_TOKEN_FILE, components: [encryptor, decryptor]}
{{- if .Values.vault.caCert.existingSecret.name }}
- {volume: vault-ca, secret: {{ .Values.vault.caCert.existingSecret.name | quote }}, key: {{ .Values.vault.caCert.existingSecret.key | quote }}, dir: /etc/kamus/vault-ca, file: ca.crt, env: KAMUS_VAULT_CA_CERT, components: [encryptor, decryptor]}
{{- end }}
{{- end }}
{{- if and (eq .Values.provider "azure") (eq .Values.azure.credential "client-secret") }}
- {volume: azure-client-secret, secret: {{ .Values.azure.clientSecret.existingSecret.name | quote }}, key: {{ .Values.azure.clientSecret.existingSecret.key | quote }}, dir: /etc/kamus/keys/azure, file: client-secret, env: KAMUS_AZURE_CLIENT_SECRET_FILE, components: [encryptor, decryptor]}
{{- end }}
{{- if .Values.sealingKeys.existingSecret.name }}
- {volume: sealing-keys, secret: {{ .Values.sealingKeys.existingSecret.name | quote }}, key: {{ .Values.sealingKeys.existingSecret.key | quote }}, dir: /etc/kamus/keys/sealing, file: sealing-keys.json, env: KAMUS_SEALING_KEYS_FILE, components: [encryptor, decryptor]}
{{- end }}
{{- if and .Values.decryptor.auditFile.enabled .Values.decryptor.auditFile.signingKey.existingSecret.name }}
- {volume: audit-signing-key, secret: {{ .Values.decryptor.auditFile.signingKey.existingSecret.name | quote }}, key: {{ .Values.decryptor.auditFile.signingKey.existingSecret.key | quote }}, dir: /etc/kamus/keys/audit-signing, file: signing.key, env: KAMUS_AUDIT_SIGNING_KEY_FILE, components: [decryptor]}
{{- end }}
{{- if .Values.decryptor.legacyKey.existingSecret.name }}
- {volume: legacy-key, secret: {{ .Values.decryptor.legacyKey.existingSecret.name | quote }}, key: {{ .Values.decryptor.legacyKey.existingSecret.key | quote }}, dir: /etc/kamus/keys/legacy, file: legacy.key, env: KAMUS_LEGACY_KEY_FILE, components: [decryptor]}
{{- end }}
{{- end -}}

{{/* One key given as an existing Secret or as a value, never both, never neither. */}}
{{- define "kamus.validateKey" -}}
{{- if and .existing .created -}}
{{- fail (printf "%s: set %s.existingSecret.name or %s, not both" .what .path .createPath) -}}
{{- end -}}
{{- if not (or .existing .created) -}}
{{- fail (printf "%s is required and has no default (keys are never generated by the chart): set %s.existingSecret.name to an existing Secret, or %s. %s" .what .path .createPath .hint) -}}
{{- end -}}
{{- end -}}

{{/* A base64 key of 32+ bytes given as a value. */}}
{{- define "kamus.validateBase64Key" -}}
{{- if .value -}}
{{- $text := .value | trim -}}
{{- if not (regexMatch "^[A-Za-z0-9+/]+={0,2}$" $text) -}}
{{- fail (printf "%s must be base64" .path) -}}
{{- end -}}
{{- if lt (len (b64dec $text)) 32 -}}
{{- fail (printf "%s must hold at least 32 bytes (base64 of `head -c 32 /dev/urandom`)" .path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Every cross-field rule the schema cannot express; each failure says what to set. */}}
{{- define "kamus.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.provider "local" -}}
{{- include "kamus.validateKey" (dict "what" "The local provider's keyring" "path" "keyring" "createPath" "keyring.create.keyringJson" "existing" $v.keyring.existingSecret.name "created" $v.keyring.create.keyringJson "hint" "Create one with `kamus-cli keyring new keyring.json`, then `kubectl create secret generic kamus-keys --from-file=keyring.json` and `--set keyring.existingSecret.name=kamus-keys`.") -}}
{{- if $v.keyring.create.keyringJson -}}
{{- $keyring := fromJson $v.keyring.create.keyringJson -}}
{{- if or (hasKey $keyring "Error") (not (kindIs "slice" (get $keyring "keys"))) -}}
{{- fail "keyring.create.keyringJson must be the JSON keyring of `kamus-cli keyring new` ({\"version\": 1, \"keys\": [...]})" -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $required := dict "gcp" (list "gcp.keyRing" $v.gcp.keyRing) "aws" (list "aws.region" $v.aws.region) "pkcs11" (list "pkcs11.library" $v.pkcs11.library) "vault" (list "vault.addr" $v.vault.addr) "azure" (list "azure.vaultUrl" $v.azure.vaultUrl) -}}
{{- $need := get $required $v.provider -}}
{{- if not (index $need 1) -}}
{{- fail (printf "%s is required for the %s provider" (index $need 0) $v.provider) -}}
{{- end -}}
{{- if and (eq $v.provider "pkcs11") (not $v.pkcs11.tokenLabel) -}}
{{- fail "pkcs11.tokenLabel is required for the pkcs11 provider" -}}
{{- end -}}
{{- if and (eq $v.provider "pkcs11") (not $v.pkcs11.pin.existingSecret.name) -}}
{{- fail "pkcs11.pin.existingSecret.name is required for the pkcs11 provider: the user PIN comes from an existing Secret" -}}
{{- end -}}
{{- if and (eq $v.provider "azure") (eq $v.azure.credential "client-secret") (not (and $v.azure.tenantId $v.azure.clientId $v.azure.clientSecret.existingSecret.name)) -}}
{{- fail "azure.credential client-secret needs azure.tenantId, azure.clientId and azure.clientSecret.existingSecret.name (the secret comes from an existing Secret)" -}}
{{- end -}}
{{- if and (eq $v.provider "vault") (not $v.vault.token.existingSecret.name) -}}
{{- fail "vault.token.existingSecret.name is required for the vault provider: the token comes from an existing Secret" -}}
{{- end -}}
{{- if eq $v.kms.keyMode "shared" -}}
{{- if not $v.kms.key -}}
{{- fail (printf "kms.key is required for the %s provider in the shared key mode (or set kms.keyMode=per-service-account)" $v.provider) -}}
{{- end -}}
{{- else -}}
{{- include "kamus.validateKey" (dict "what" "The per-service-account naming key" "path" "kms.namingKey" "createPath" "kms.namingKey.create.value" "existing" $v.kms.namingKey.existingSecret.name "created" $v.kms.namingKey.create.value "hint" "Create one with `head -c 32 /dev/urandom | base64`.") -}}
{{- include "kamus.validateBase64Key" (dict "path" "kms.namingKey.create.value" "value" $v.kms.namingKey.create.value) -}}
{{- end -}}
{{- end -}}
{{- include "kamus.validateKey" (dict "what" "The decryptor's audit key" "path" "auditKey" "createPath" "auditKey.create.value" "existing" $v.auditKey.existingSecret.name "created" $v.auditKey.create.value "hint" "Create one with `head -c 32 /dev/urandom | base64 > audit.key`.") -}}
{{- include "kamus.validateBase64Key" (dict "path" "auditKey.create.value" "value" $v.auditKey.create.value) -}}
{{- if and $v.encryptor.ingress.enabled (not $v.encryptor.ingress.host) -}}
{{- fail "encryptor.ingress.host is required when encryptor.ingress.enabled is true" -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- range $component := list "encryptor" "decryptor" -}}
{{- if not (include "kamus.tlsSecretName" (dict "root" $ "component" $component)) -}}
{{- fail (printf "tls.existingSecret is required when tls.enabled is true: the name of a kubernetes.io/tls Secret with tls.crt and tls.key for the %s (e.g. made by a cert-manager Certificate), or set tls.%s.existingSecret; see docs/DEPLOY.md, \"TLS\"" $component $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment of one component: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.env" -}}
{{- $v := .root.Values -}}
{{- $c := index $v .component -}}
{{- /* The rest of gunicorn's configuration is kamus_service/gunicorn_conf.py, in the image. */ -}}
{{- $gunicorn := printf "--workers=%d --threads=%d --timeout=%d" (int $c.gunicorn.workers) (int $c.gunicorn.threads) (int $c.gunicorn.timeout) -}}
{{- if $v.tls.enabled -}}
{{- $gunicorn = printf "%s --certfile=%s/tls.crt --keyfile=%s/tls.key" $gunicorn (include "kamus.tlsDir" .root) (include "kamus.tlsDir" .root) -}}
{{- end -}}
- name: GUNICORN_CMD_ARGS
  value: {{ $gunicorn | quote }}
- name: KAMUS_REUSE_PORT
  value: {{ $c.gunicorn.reusePort | quote }}
- name: KAMUS_PROVIDER
  value: {{ $v.provider | quote }}
- name: KAMUS_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
- name: KAMUS_MAX_PLAINTEXT_BYTES
  value: {{ $v.maxPlaintextBytes | int | quote }}
- name: KAMUS_MAX_BODY_BYTES
  value: {{ $v.maxBodyBytes | int | quote }}
- name: KAMUS_READINESS_CHECK_SECONDS
  value: {{ $v.readinessCheckSeconds | quote }}
- name: KAMUS_CLIENT_TIMEOUT_SECONDS
  value: {{ $v.clientTimeoutSeconds | quote }}
- name: KAMUS_PADDING_BUCKET
  value: {{ $v.paddingBucket | int | quote }}
{{- if $v.clusterName }}
- name: KAMUS_CLUSTER_NAME
  value: {{ $v.clusterName | quote }}
{{- end }}
- name: KAMUS_ALLOW_DEFAULT_SERVICE_ACCOUNT
  value: {{ $v.allowDefaultServiceAccount | toString | quote }}
{{- if include "kamus.remoteProvider" .root }}
- name: KAMUS_KMS_KEY_MODE
  value: {{ $v.kms.keyMode | quote }}
{{- if eq $v.kms.keyMode "shared" }}
- name: KAMUS_KMS_KEY
  value: {{ $v.kms.key | quote }}
{{- end }}
- name: KAMUS_KMS_DATA_KEY_CACHE_SECONDS
  value: {{ $v.kms.dataKeyCacheSeconds | toString | quote }}
- name: KAMUS_KMS_DATA_KEY_CACHE_SIZE
  value: {{ $v.kms.dataKeyCacheSize | int | quote }}
- name: KAMUS_KMS_TIMEOUT_SECONDS
  value: {{ $v.kms.timeoutSeconds | toString | quote }}
{{- end }}
{{- if eq $v.provider "gcp" }}
- name: KAMUS_GCP_KEY_RING
  value: {{ $v.gcp.keyRing | quote }}
{{- with $v.gcp.endpoint }}
- name: KAMUS_GCP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $v.provider "aws" }}
- name: KAMUS_AWS_REGION
  value: {{ $v.aws.region | quote }}
{{- with $v.aws.endpointUrl }}
- name: KAMUS_AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $v.provider "pkcs11" }}
- name: KAMUS_PKCS11_LIBRARY
  value: {{ $v.pkcs11.library | quote }}
- name: KAMUS_PKCS11_TOKEN_LABEL
  value: {{ $v.pkcs11.tokenLabel | quote }}
{{- end }}
{{- if eq $v.provider "azure" }}
- name: KAMUS_AZURE_VAULT_URL
  value: {{ $v.azure.vaultUrl | quote }}
- name: KAMUS_AZURE_KEY_TYPE
  value: {{ $v.azure.keyType | quote }}
- name: KAMUS_AZURE_CREDENTIAL
  value: {{ $v.azure.credential | quote }}
{{- with $v.azure.tenantId }}
- name: KAMUS_AZURE_TENANT_ID
  value: {{ . | quote }}
{{- end }}
{{- with $v.azure.clientId }}
- name: KAMUS_AZURE_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- with $v.azure.authorityHost }}
- name: KAMUS_AZURE_AUTHORITY_HOST
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $v.provider "vault" }}
- name: KAMUS_VAULT_ADDR
  value: {{ $v.vault.addr | quote }}
- name: KAMUS_VAULT_TRANSIT_MOUNT
  value: {{ $v.vault.transitMount | quote }}
{{- end }}
{{- if eq .component "encryptor" }}
- name: KAMUS_WEB_PAGE
  value: {{ $c.webPage | toString | quote }}
{{- end }}
{{- if eq .component "decryptor" }}
- name: KAMUS_TOKEN_AUDIENCES
  value: {{ join "," $c.tokenAudiences | quote }}
- name: KAMUS_TOKEN_VERIFICATION
  value: {{ $c.tokenVerification | quote }}
{{- with $c.tokenIssuer }}
- name: KAMUS_TOKEN_ISSUER
  value: {{ . | quote }}
{{- end }}
- name: KAMUS_TOKENREVIEW_TIMEOUT_SECONDS
  value: {{ $c.tokenReview.timeoutSeconds | toString | quote }}
- name: KAMUS_TOKENREVIEW_CACHE_SECONDS
  value: {{ $c.tokenReview.cacheSeconds | toString | quote }}
- name: KAMUS_TOKENREVIEW_FAILURE_CACHE_SECONDS
  value: {{ $c.tokenReview.failureCacheSeconds | toString | quote }}
- name: KAMUS_TOKENREVIEW_MAX_CONCURRENT
  value: {{ $c.tokenReview.maxConcurrent | int | quote }}
- name: KAMUS_RATE_LIMIT_FAILURES_PER_MINUTE
  value: {{ $c.rateLimitFailuresPerMinute | int | quote }}
- name: KAMUS_MAX_BATCH_ITEMS
  value: {{ $c.maxBatchItems | int | quote }}
{{- if $c.legacyKey.existingSecret.name }}
- name: KAMUS_LEGACY_KEY_DERIVATION
  value: {{ $c.legacyKey.keyDerivation | toString | quote }}
{{- end }}
{{- if $c.auditFile.enabled }}
- name: KAMUS_AUDIT_DIR
  value: /var/log/kamus
- name: KAMUS_AUDIT_CHECKPOINT_RECORDS
  value: {{ $c.auditFile.checkpointRecords | int | quote }}
- name: KAMUS_AUDIT_CHECKPOINT_SECONDS
  value: {{ $c.auditFile.checkpointSeconds | quote }}
- name: KAMUS_AUDIT_POLICY
  value: {{ $c.auditFile.policy | quote }}
- name: KAMUS_AUDIT_FSYNC
  value: {{ $c.auditFile.fsync | toString | quote }}
- name: KAMUS_AUDIT_ORIGIN
  value: {{ printf "%s/%s" .root.Release.Namespace (include "kamus.componentName" .) | quote }}
{{- if include "kamus.auditWitness" .root }}
- name: KAMUS_AUDIT_WITNESS_CONFIGMAP
  value: {{ printf "%s/%s" .root.Release.Namespace (include "kamus.auditWitnessName" .root) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- $component := .component }}
{{- range (include "kamus.secretFiles" .root | fromYamlArray) }}
{{- if has $component .components }}
- name: {{ .env }}
  value: {{ printf "%s/%s" .dir .file | quote }}
{{- end }}
{{- end }}
{{- with $c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Deployment of one component: (dict "root" $ "component" "encryptor"). */}}
{{- define "kamus.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $component := .component -}}
{{- $c := index $v $component -}}
{{- $files := include "kamus.secretFiles" $root | fromYamlArray -}}
{{- $port := include "kamus.portName" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "kamus.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kamus.componentLabels" . | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "kamus.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "kamus.componentLabels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $c.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "kamus.serviceAccountName" . }}
      {{- /* Only the decryptor talks to the Kubernetes API (TokenReview). */}}
      automountServiceAccountToken: {{ eq $component "decryptor" }}
      {{- /* Service links would inject KAMUS_*_SERVICE_HOST variables into the settings' namespace. */}}
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $v.topologySpread.topologyKeys }}
        - topologyKey: {{ . }}
          maxSkew: {{ $v.topologySpread.maxSkew }}
          whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "kamus.selectorLabels" (dict "root" $root "component" $component) | nindent 14 }}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "kamus.image" . | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          ports:
            - name: {{ $port }}
              containerPort: 8080
              protocol: TCP
          env:
            {{- include "kamus.env" . | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ $port }}
              {{- if $v.tls.enabled }}
              scheme: HTTPS
              {{- end }}
            {{- toYaml $c.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $port }}
              {{- if $v.tls.enabled }}
              scheme: HTTPS
              {{- end }}
            {{- toYaml $c.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- range $files }}
            {{- if has $component .components }}
            - name: {{ .volume }}
              mountPath: {{ .dir }}
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if $v.tls.enabled }}
            - name: tls
              mountPath: {{ include "kamus.tlsDir" $root }}
              readOnly: true
            {{- end }}
            {{- if and (eq $component "decryptor") $c.auditFile.enabled }}
            - name: audit
              mountPath: /var/log/kamus
            {{- end }}
            {{- with $c.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $v.tmpSizeLimit }}
        {{- range $files }}
        {{- if has $component .components }}
        - name: {{ .volume }}
          secret:
            secretName: {{ .secret }}
            defaultMode: 0440
            items:
              - key: {{ .key }}
                path: {{ .file }}
        {{- end }}
        {{- end }}
        {{- if $v.tls.enabled }}
        {{- /* No subPath: the kubelet updates the files when cert-manager renews the Secret. */}}
        - name: tls
          secret:
            secretName: {{ include "kamus.tlsSecretName" . }}
            defaultMode: 0440
            items:
              - key: tls.crt
                path: tls.crt
              - key: tls.key
                path: tls.key
        {{- end }}
        {{- if and (eq $component "decryptor") $c.auditFile.enabled }}
        - name: audit
          {{- if $c.auditFile.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $c.auditFile.existingClaim }}
          {{- else }}
          emptyDir:
            sizeLimit: {{ $c.auditFile.sizeLimit }}
          {{- end }}
        {{- end }}
        {{- with $c.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* PromQL: what a counter grew by over the window, counting series born within it in full: such a
series' first sample already holds what happened (a pod probing once, then stopping), which
increase() never counts. A counter reset shows as a drop and is not counted. */}}
{{- define "kamus.grewBy" -}}
({{ .metric }}{ {{- .sel -}} } - {{ .metric }}{ {{- .sel -}} } offset {{ .window }}) or {{ .metric }}{ {{- .sel -}} }
{{- end }}

{{/* The cluster witness of the audit chains (docs/AUDIT.md): on with a signing key. */}}
{{- define "kamus.auditWitness" -}}
{{- $a := .Values.decryptor.auditFile -}}
{{- if and $a.enabled $a.signingKey.existingSecret.name $a.clusterWitness -}}true{{- end -}}
{{- end }}

{{- define "kamus.auditWitnessName" -}}
{{- printf "%s-audit-heads" (include "kamus.componentName" (dict "root" . "component" "decryptor")) | trunc 63 | trimSuffix "-" -}}
{{- end }}
