"""The NatsBroker built from settings, as gateway and worker both use it."""

from __future__ import annotations

from typing import Iterable

from dramatiq.middleware import Middleware

from dramatiq_nats import NatsBroker

from .settings import Settings


def build_broker(settings: Settings, middleware: list[Middleware], queues: Iterable[str]) -> NatsBroker:
    options = {}
    if settings.nats_user:
        options["user"] = settings.nats_user
        # Replies to this user on an inbox of its own: NATS permissions can then keep other
        # users from subscribing to its deliveries (k8s/base/nats/natsq-users.conf).
        options["inbox_prefix"] = f"_INBOX_{settings.nats_user}"
    if settings.nats_password:
        options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds_file:
        options["user_credentials"] = settings.nats_creds_file
    broker = NatsBroker(
        settings.nats_url,
        middleware=middleware,
        namespace=settings.namespace,
        replicas=settings.stream_replicas,
        ack_wait_ms=settings.ack_wait_ms,
        max_deliveries=settings.max_deliveries,
        dead_letter_ttl_ms=settings.dead_letter_ttl_ms,
        publish_timeout_ms=settings.publish_timeout_ms,
        tls_ca_file=settings.nats_tls_ca_file,
        tls_cert_file=settings.nats_tls_cert_file,
        tls_key_file=settings.nats_tls_key_file,
        declare=settings.nats_declare,
        **options,
    )
    for queue_name in sorted(queues):
        broker.declare_queue(queue_name)
    return broker
