"""A small JSON Schema for the Chaos Mesh experiments in chaos/ (chaos-mesh.org/v1alpha1).

The CRDs are not available offline; this covers the fields natsq uses, with the names, types and
enums of Chaos Mesh 2.x (PodChaos and NetworkChaos specs, PodSelectorSpec), and rejects unknown
fields so a typo fails.
"""

_STR = {"type": "string", "minLength": 1}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
_MODE = {"enum": ["one", "all", "fixed", "fixed-percent", "random-max-percent"]}
_NAMESPACES = {"type": "array", "minItems": 1, "items": {"enum": ["natsq", "natsq-data"]}}

SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["namespaces", "labelSelectors"],
    "properties": {
        "namespaces": _NAMESPACES,
        "labelSelectors": {**_STR_MAP, "minProperties": 1},
        "expressionSelectors": {"type": "array"},
        "annotationSelectors": _STR_MAP,
        "fieldSelectors": _STR_MAP,
        "podPhaseSelectors": {"type": "array", "items": {"enum": ["Pending", "Running", "Succeeded", "Failed", "Unknown"]}},
        "nodeSelectors": _STR_MAP,
        "nodes": {"type": "array", "items": _STR},
        "pods": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1, "items": _STR}},
    },
}

_METADATA = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"enum": ["natsq", "natsq-data"]},
        "labels": {"type": "object", "required": ["app.kubernetes.io/part-of"]},
        "annotations": _STR_MAP,
    },
}

POD_CHAOS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "chaos-mesh.org/v1alpha1"},
        "kind": {"const": "PodChaos"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["action", "mode", "selector"],
            "properties": {
                "action": {"enum": ["pod-kill", "pod-failure", "container-kill"]},
                "mode": _MODE,
                "value": {"type": "string"},
                "selector": SELECTOR,
                "duration": _DURATION,
                "gracePeriod": {"type": "integer", "minimum": 0},
                "containerNames": {"type": "array", "items": _STR},
            },
            "allOf": [
                {"if": {"properties": {"action": {"const": "container-kill"}}},
                 "then": {"required": ["containerNames"]}},
                {"if": {"properties": {"action": {"const": "pod-failure"}}}, "then": {"required": ["duration"]}},
            ],
        },
    },
}

NETWORK_CHAOS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "chaos-mesh.org/v1alpha1"},
        "kind": {"const": "NetworkChaos"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["action", "mode", "selector", "duration"],
            "properties": {
                "action": {"enum": ["netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]},
                "mode": _MODE,
                "value": {"type": "string"},
                "selector": SELECTOR,
                "direction": {"enum": ["to", "from", "both"]},
                "duration": _DURATION,
                "target": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["mode", "selector"],
                    "properties": {"mode": _MODE, "value": {"type": "string"}, "selector": SELECTOR},
                },
                "externalTargets": {"type": "array", "items": _STR},
                "device": _STR,
                "delay": {"type": "object"},
                "loss": {"type": "object"},
                "bandwidth": {"type": "object"},
            },
            "allOf": [
                {"if": {"properties": {"action": {"const": "partition"}}},
                 "then": {"required": ["direction", "target"]}},
            ],
        },
    },
}

SCHEMAS = {"PodChaos": POD_CHAOS, "NetworkChaos": NETWORK_CHAOS}
