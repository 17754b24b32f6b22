"""Least privilege for ``make run``: the shipped NATS roles and Valkey ACL users, with passwords made at start.

The users and their permissions are the ones Kubernetes runs (``k8s/base/nats/natsq-users.conf``,
``k8s/base/valkey/users.acl``); only the passwords are new, made at every start and written to a
file only the user can read, so ``make run`` needs no setup.
"""

from __future__ import annotations

import secrets
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path

#: NATS roles (natsq-users.conf) and Valkey ACL users (users.acl) of the project.
NATS_ROLES = ("gateway", "worker", "admin", "console")
VALKEY_USERS = ("gateway", "worker")
#: JetStream storage the NATSQ account may use (tasks, dead letters, hand-back counts).
JETSTREAM_MAX_FILE = "1G"


def _password() -> str:
    # A leading letter: nats-server parses a variable's value as configuration, and a password
    # of digits would become a number.
    return "p" + secrets.token_hex(16)


@dataclass(frozen=True)
class LocalUsers:
    nats_passwords: dict[str, str] = field(default_factory=lambda: {role: _password() for role in NATS_ROLES})
    #: The ACL users, and ``default``: the operator's (valkey-cli), which the app never uses.
    valkey_passwords: dict[str, str] = field(
        default_factory=lambda: {user: _password() for user in (*VALKEY_USERS, "default")})

    def nats_server_env(self) -> dict[str, str]:
        """The variables natsq-users.conf takes its passwords from."""
        return {f"NATSQ_{role.upper()}_NATS_PASSWORD": pw for role, pw in self.nats_passwords.items()}

    def app_env(self, role: str) -> dict[str, str]:
        """Settings of a process running as ``role``: its NATS user (and Valkey user, if it has one)."""
        env = {"NATSQ_NATS_USER": role, "NATSQ_NATS_PASSWORD": self.nats_passwords[role]}
        if role != "admin":
            env["NATSQ_NATS_DECLARE"] = "false"  # `python -m natsq.bootstrap` declares, as admin
        if role in VALKEY_USERS:
            env |= {"NATSQ_VALKEY_USER": role, "NATSQ_VALKEY_PASSWORD": self.valkey_passwords[role]}
        return env

    def console_env(self) -> dict[str, str]:
        """The gateway's settings for the admin API's and console's own NATS user."""
        return {"NATSQ_CONSOLE_NATS_USER": "console", "NATSQ_CONSOLE_NATS_PASSWORD": self.nats_passwords["console"]}

    def write_nats_config(self, directory: Path, server_conf: Path, users_conf: Path) -> Path:
        """A nats-server config: the project's server settings, and the NATSQ account with the role users."""
        # Side by side, as Kubernetes mounts them: nats-server resolves includes from the config's directory.
        shutil.copyfile(server_conf, directory / "nats-server.conf")
        shutil.copyfile(users_conf, directory / "natsq-users.conf")
        config = directory / "nats.conf"
        config.write_text(
            "# Written by `make run` (app/natsq/run_local.py) at every start.\n"
            "include ./nats-server.conf\n"
            "accounts {\n"
            "  NATSQ {\n"
            # The queue's limit, as the account's in Kubernetes: past it a publish is refused and
            # POST /task answers 503 queue_full (a stream limit would drop queued tasks instead).
            f"    jetstream: {{ max_file: {JETSTREAM_MAX_FILE}, max_mem: -1 }}\n"
            "    include ./natsq-users.conf\n"
            "  }\n"
            "}\n"
        )
        return config

    def write_valkey_acl(self, directory: Path, template: Path, namespace: str) -> Path:
        """users.acl filled in as the deployment fills it, plus the operator's ``default`` user."""
        acl = string.Template(template.read_text()).substitute(
            NAMESPACE=namespace, GATEWAY_PASSWORD=self.valkey_passwords["gateway"],
            WORKER_PASSWORD=self.valkey_passwords["worker"])
        path = directory / "users.acl"
        _write_private(path, acl + f"user default on >{self.valkey_passwords['default']} ~* &* +@all\n")
        return path

    def write_credentials(self, path: Path) -> None:
        """The passwords, for the nats CLI or valkey-cli, readable by the user only."""
        lines = [f"NATS_{role.upper()}_PASSWORD={pw}" for role, pw in self.nats_passwords.items()]
        lines += [f"VALKEY_{user.upper()}_PASSWORD={pw}" for user, pw in self.valkey_passwords.items()]
        _write_private(path, "# make run's passwords, new at every start (users: the names after NATS_ and VALKEY_)\n"
                       + "\n".join(lines) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, from its first byte on."""
    path.touch(mode=0o600)
    path.chmod(0o600)  # an older file keeps its mode through touch
    path.write_text(text)
