"""A JSON Schema for the Chaos Mesh experiments and the workflow in chaos/ (chaos-mesh.org/v1alpha1).

Written for this project: no package on PyPI, npm or Debian ships the Chaos Mesh CRDs, and the
machines cannot reach the chart or the repository (what was searched: docs/chaos-engineering.md).
It covers the fields natsq uses, named and typed as in the upstream CRDs (PodChaos and
NetworkChaos specs, PodSelectorSpec, DelaySpec, LossSpec, Workflow templates), and rejects
unknown fields so a typo fails. It was not compared with the CRD files field by field.
"""

_STR = {"type": "string", "minLength": 1}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
_MODE = {"enum": ["one", "all", "fixed", "fixed-percent", "random-max-percent"]}
#: Chaos Mesh writes percentages and correlations as strings ("5", "25.5").
_PERCENT = {"type": "string", "pattern": r"^(100|[0-9]{1,2})(\.[0-9]+)?$"}
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
                "delay": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["latency"],
                    "properties": {"latency": _DURATION, "jitter": _DURATION, "correlation": _PERCENT,
                                   "reorder": {"type": "object"}},
                },
                "loss": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["loss"],
                    "properties": {"loss": _PERCENT, "correlation": _PERCENT},
                },
                "bandwidth": {"type": "object"},
            },
            "allOf": [
                {"if": {"properties": {"action": {"const": "partition"}}},
                 "then": {"required": ["direction", "target"]}},
                {"if": {"properties": {"action": {"const": "delay"}}}, "then": {"required": ["delay"]}},
                {"if": {"properties": {"action": {"const": "loss"}}}, "then": {"required": ["loss"]}},
                {"if": {"properties": {"action": {"const": "netem"}}},
                 "then": {"anyOf": [{"required": ["delay"]}, {"required": ["loss"]}]}},
            ],
        },
    },
}

_TEMPLATE_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}

WORKFLOW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "chaos-mesh.org/v1alpha1"},
        "kind": {"const": "Workflow"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["entry", "templates"],
            "properties": {
                "entry": _TEMPLATE_NAME,
                "templates": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "templateType"],
                        "properties": {
                            "name": _TEMPLATE_NAME,
                            "templateType": {"enum": ["Serial", "Parallel", "Suspend", "Task", "Schedule",
                                                      "StatusCheck", "PodChaos", "NetworkChaos"]},
                            "deadline": _DURATION,
                            "children": {"type": "array", "minItems": 1, "items": _TEMPLATE_NAME},
                            "podChaos": POD_CHAOS["properties"]["spec"],
                            "networkChaos": NETWORK_CHAOS["properties"]["spec"],
                        },
                        "allOf": [
                            {"if": {"properties": {"templateType": {"enum": ["Serial", "Parallel"]}}},
                             "then": {"required": ["children"]}},
                            {"if": {"properties": {"templateType": {"const": "Suspend"}}},
                             "then": {"required": ["deadline"]}},
                            {"if": {"properties": {"templateType": {"const": "PodChaos"}}},
                             "then": {"required": ["podChaos"]}},
                            {"if": {"properties": {"templateType": {"const": "NetworkChaos"}}},
                             "then": {"required": ["networkChaos"]}},
                        ],
                    },
                },
            },
        },
    },
}

SCHEMAS = {"PodChaos": POD_CHAOS, "NetworkChaos": NETWORK_CHAOS, "Workflow": WORKFLOW}
