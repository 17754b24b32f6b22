"""JSON Schemas for the custom resources natsq renders, written for this project.

kubernetes-validate knows only built-in kinds. The CRD schemas of the operators are large and not
vendored here; these schemas cover the fields natsq uses, reject unknown fields where we know the
shape (a typo must fail), and follow the upstream CRDs' names and types:
prometheus-operator v0.8x (monitoring.coreos.com/v1), KEDA 2.x (keda.sh/v1alpha1), External
Secrets Operator >= 0.17 (external-secrets.io/v1), Argo CD 3.x (argoproj.io/v1alpha1) and
cert-manager 1.x (cert-manager.io/v1).
A custom resource without a schema here fails the tests: add one when adding a new kind.
"""

_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_INT_OR_STR = {"anyOf": [{"type": "integer"}, {"type": "string"}]}

_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": _STR,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": _STR},
                },
            },
        },
    },
}

_NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}},
}

_RELABELINGS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                                "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                                "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                                "dropequal", "DropEqual"]},
            "modulus": {"type": "integer"},
            "regex": _STR,
            "replacement": _STR,
            "separator": _STR,
            "sourceLabels": {"type": "array", "items": _STR},
            "targetLabel": _STR,
        },
    },
}

_SCRAPE_ENDPOINT_PROPERTIES = {
    "path": _STR,
    "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "interval": _DURATION,
    "scrapeTimeout": _DURATION,
    "honorLabels": {"type": "boolean"},
    "honorTimestamps": {"type": "boolean"},
    "params": {"type": "object", "additionalProperties": {"type": "array", "items": _STR}},
    "relabelings": _RELABELINGS,
    "metricRelabelings": _RELABELINGS,
    "tlsConfig": {"type": "object"},
    "authorization": {"type": "object"},
    "basicAuth": {"type": "object"},
    "followRedirects": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"},
    "filterRunning": {"type": "boolean"},
}


def _resource(api_version: str, kind: str, spec: dict, spec_required: bool = True, namespaced: bool = True) -> dict:
    metadata_required = ["name", "namespace"] if namespaced else ["name"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": metadata_required,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "namespace": _STR,
                    "labels": _STR_MAP,
                    "annotations": _STR_MAP,
                    "finalizers": {"type": "array", "items": _STR},
                },
            },
            "spec": spec,
        },
    }


SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": _LABEL_SELECTOR,
        "namespaceSelector": _NAMESPACE_SELECTOR,
        "jobLabel": _STR,
        "targetLabels": {"type": "array", "items": _STR},
        "podTargetLabels": {"type": "array", "items": _STR},
        "sampleLimit": {"type": "integer", "minimum": 0},
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"port": _STR, "targetPort": _INT_OR_STR, **_SCRAPE_ENDPOINT_PROPERTIES},
                "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
            },
        },
    },
})

POD_MONITOR = _resource("monitoring.coreos.com/v1", "PodMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "podMetricsEndpoints"],
    "properties": {
        "selector": _LABEL_SELECTOR,
        "namespaceSelector": _NAMESPACE_SELECTOR,
        "jobLabel": _STR,
        "podTargetLabels": {"type": "array", "items": _STR},
        "sampleLimit": {"type": "integer", "minimum": 0},
        "podMetricsEndpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"port": _STR, "portNumber": {"type": "integer"}, "targetPort": _INT_OR_STR,
                               **_SCRAPE_ENDPOINT_PROPERTIES},
                "anyOf": [{"required": ["port"]}, {"required": ["portNumber"]}, {"required": ["targetPort"]}],
            },
        },
    },
})

PROMETHEUS_RULE = _resource("monitoring.coreos.com/v1", "PrometheusRule", {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": _DURATION,
                    "query_offset": _DURATION,
                    "limit": {"type": "integer"},
                    "labels": _STR_MAP,
                    "partial_response_strategy": _STR,
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["expr"],
                            "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                            "properties": {
                                "record": _STR,
                                "alert": _STR,
                                "expr": _INT_OR_STR,
                                "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": _STR_MAP,
                                "annotations": _STR_MAP,
                            },
                        },
                    },
                },
            },
        },
    },
})

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", {
    "type": "object",
    "additionalProperties": False,
    "required": ["scaleTargetRef", "triggers"],
    "properties": {
        "scaleTargetRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR, "envSourceContainerName": _STR},
        },
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "idleReplicaCount": {"type": "integer", "minimum": 0},
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "initialCooldownPeriod": {"type": "integer", "minimum": 0},
        "fallback": {"type": "object"},
        "advanced": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"name": _STR, "behavior": {"type": "object"}},
                },
                "scalingModifiers": {"type": "object"},
            },
        },
        "triggers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "metadata"],
                "properties": {
                    "type": _STR,
                    "name": _STR,
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    "useCachedMetrics": {"type": "boolean"},
                    # KEDA trigger metadata values are all strings.
                    "metadata": _STR_MAP,
                    "authenticationRef": {"type": "object", "required": ["name"]},
                },
            },
        },
    },
})

_REMOTE_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key"],
    "properties": {
        "key": _STR,
        "property": _STR,
        "version": _STR,
        "conversionStrategy": {"enum": ["Default", "Unicode"]},
        "decodingStrategy": {"enum": ["Auto", "Base64", "Base64URL", "None"]},
        "metadataPolicy": {"enum": ["None", "Fetch"]},
    },
}

EXTERNAL_SECRET = _resource("external-secrets.io/v1", "ExternalSecret", {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretStoreRef"],
    "anyOf": [{"required": ["data"]}, {"required": ["dataFrom"]}],
    "properties": {
        "refreshInterval": _DURATION,
        "refreshPolicy": {"enum": ["CreatedOnce", "Periodic", "OnChange"]},
        "secretStoreRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": _STR, "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}},
        },
        "target": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": _STR,
                "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
                "deletionPolicy": {"enum": ["Delete", "Merge", "Retain"]},
                "immutable": {"type": "boolean"},
                "template": {"type": "object"},
            },
        },
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["secretKey", "remoteRef"],
                "properties": {"secretKey": _STR, "remoteRef": _REMOTE_REF},
            },
        },
        "dataFrom": {"type": "array", "items": {"type": "object"}},
    },
})

CLUSTER_SECRET_STORE = _resource("external-secrets.io/v1", "ClusterSecretStore", {
    "type": "object",
    "additionalProperties": False,
    "required": ["provider"],
    "properties": {
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "namespaces": {"type": "array", "items": _STR},
                    "namespaceSelector": _LABEL_SELECTOR,
                    "namespaceRegexes": {"type": "array", "items": _STR},
                },
            },
        },
        "refreshInterval": {"type": "integer"},
        "retrySettings": {"type": "object"},
        "provider": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "vault": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["server", "auth"],
                    "properties": {
                        "server": {"type": "string", "pattern": "^https://"},
                        "path": _STR,
                        "version": {"enum": ["v1", "v2"]},
                        "namespace": _STR,
                        "caBundle": _STR,
                        "caProvider": {"type": "object"},
                        "readYourWrites": {"type": "boolean"},
                        "forwardInconsistent": {"type": "boolean"},
                        "auth": {
                            "type": "object",
                            "minProperties": 1,
                            "properties": {
                                "kubernetes": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["mountPath", "role"],
                                    "properties": {
                                        "mountPath": _STR,
                                        "role": _STR,
                                        "serviceAccountRef": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "required": ["name"],
                                            "properties": {"name": _STR, "namespace": _STR,
                                                           "audiences": {"type": "array", "items": _STR}},
                                        },
                                        "secretRef": {"type": "object"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}, namespaced=False)

_SYNC_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "automated": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"prune": {"type": "boolean"}, "selfHeal": {"type": "boolean"},
                           "allowEmpty": {"type": "boolean"}, "enabled": {"type": "boolean"}},
        },
        "syncOptions": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z]+=(true|false|[A-Za-z]+)$"}},
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "limit": {"type": "integer"},
                "backoff": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"duration": _STR, "factor": {"type": "integer"}, "maxDuration": _STR},
                },
            },
        },
        "managedNamespaceMetadata": {"type": "object"},
    },
}

APPLICATION = _resource("argoproj.io/v1alpha1", "Application", {
    "type": "object",
    "additionalProperties": False,
    "required": ["project", "destination"],
    "oneOf": [{"required": ["source"]}, {"required": ["sources"]}],
    "properties": {
        "project": _STR,
        "source": {
            "type": "object",
            "additionalProperties": False,
            "required": ["repoURL"],
            "properties": {"repoURL": _STR, "targetRevision": _STR, "path": _STR, "chart": _STR,
                           "kustomize": {"type": "object"}, "ref": _STR},
        },
        "sources": {"type": "array", "items": {"type": "object"}},
        "destination": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"server": _STR, "name": _STR, "namespace": _STR},
            "oneOf": [{"required": ["server"]}, {"required": ["name"]}],
        },
        "syncPolicy": _SYNC_POLICY,
        "ignoreDifferences": {"type": "array", "items": {"type": "object"}},
        "revisionHistoryLimit": {"type": "integer"},
        "info": {"type": "array", "items": {"type": "object"}},
    },
})

_GROUP_KIND = {
    "type": "object",
    "additionalProperties": False,
    "required": ["group", "kind"],
    "properties": {"group": _STR, "kind": _STR},
}

APP_PROJECT = _resource("argoproj.io/v1alpha1", "AppProject", {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "description": _STR,
        "sourceRepos": {"type": "array", "items": _STR},
        "destinations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"server": _STR, "name": _STR, "namespace": _STR},
            },
        },
        "clusterResourceWhitelist": {"type": "array", "items": _GROUP_KIND},
        "clusterResourceBlacklist": {"type": "array", "items": _GROUP_KIND},
        "namespaceResourceWhitelist": {"type": "array", "items": _GROUP_KIND},
        "namespaceResourceBlacklist": {"type": "array", "items": _GROUP_KIND},
        "roles": {"type": "array", "items": {"type": "object"}},
        "syncWindows": {"type": "array", "items": {"type": "object"}},
        "orphanedResources": {"type": "object"},
        "sourceNamespaces": {"type": "array", "items": _STR},
    },
})

CERTIFICATE = _resource("cert-manager.io/v1", "Certificate", {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "anyOf": [{"required": ["commonName"]}, {"required": ["dnsNames"]}, {"required": ["ipAddresses"]}],
    "properties": {
        "secretName": _STR,
        "issuerRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR},
        },
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": {"type": "array", "items": _STR},
        "ipAddresses": {"type": "array", "items": _STR},
        "uris": {"type": "array", "items": _STR},
        "emailAddresses": {"type": "array", "items": _STR},
        "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"},
        "renewBefore": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"},
        "isCA": {"type": "boolean"},
        "usages": {"type": "array", "items": {"enum": [
            "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
            "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
            "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
            "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            },
        },
        "secretTemplate": {"type": "object"},
        "subject": {"type": "object"},
        "revisionHistoryLimit": {"type": "integer"},
    },
})

SCHEMAS = {
    (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"]): schema
    for schema in (SERVICE_MONITOR, POD_MONITOR, PROMETHEUS_RULE, SCALED_OBJECT, EXTERNAL_SECRET,
                   CLUSTER_SECRET_STORE, APPLICATION, APP_PROJECT, CERTIFICATE)
}
