"""Every overlay renders, and every rendered object is schema-valid.

Built-in kinds: kubernetes-validate, strict (unknown fields fail), at the Kubernetes version the
manifests target. Custom resources: the project schemas in k8s_cr_schemas.py.
"""

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from k8s_cr_schemas import SCHEMAS
from k8s_manifests import K8S, kubectl, name_of, render

# The oldest Kubernetes the manifests support (also the Pod Security `*-version` labels).
KUBERNETES_VERSION = "1.33.0"


def _errors(objects: list[dict]) -> list[str]:
    errors = []
    for obj in objects:
        custom = SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        try:
            if custom is not None:
                jsonschema.Draft202012Validator(custom).validate(obj)
            else:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError:
            errors.append(f"{name_of(obj)}: no schema for {obj['apiVersion']} {obj['kind']} "
                          "(add one to tests/k8s/k8s_cr_schemas.py)")
        except jsonschema.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            errors.append(f"{name_of(obj)}: {path}: {e.message}")
    return errors


def test_overlay_renders(rendered):
    assert rendered.objects, f"{rendered.name} renders nothing"


def test_base_renders_on_its_own():
    if kubectl() is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    objects = render(K8S / "base")
    assert {"Namespace", "Deployment", "StatefulSet"} <= {o["kind"] for o in objects}


def test_overlay_objects_are_schema_valid(rendered):
    assert _errors(rendered.objects) == []


def test_argocd_objects_are_schema_valid(argocd_rendered):
    assert _errors(argocd_rendered.objects) == []


def test_validation_rejects_unknown_fields():
    """The check is strict: a misspelt field is an error, not a silent no-op."""
    bad_deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "natsq"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "replica": 2,
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i:1.0.0"}]}}},
    }
    bad_monitor = {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "natsq"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]},
    }
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}
    assert len(_errors([bad_deployment, bad_monitor, unknown_kind])) == 3
