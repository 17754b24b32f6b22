"""The reference gateway of `make bench`: a minimal plain Flask app that enqueues
the same kind of message as POST /task of app/natsq/gateway.py, through Dramatiq's
RedisBroker (no validation models, no task store, no metrics, no logs).

    gunicorn --config python:tests.bench.reference_gunicorn_conf "tests.bench.reference_gateway:create_app()"

Environment: BENCH_VALKEY_URL, BENCH_REDIS_NAMESPACE.
"""

from __future__ import annotations

import os
import uuid

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from flask import Flask, jsonify, request

#: The gateway's actors and their queue (app/natsq/tasks.py puts them all on "default").
ACTORS = {"count_primes", "wait", "flaky"}
QUEUE = "default"


def create_app() -> Flask:
    broker = RedisBroker(url=os.environ["BENCH_VALKEY_URL"], namespace=os.environ.get("BENCH_REDIS_NAMESPACE", "dramatiq"), middleware=[])
    broker.declare_queue(QUEUE)
    app = Flask(__name__)

    @app.post("/task")
    def submit_task():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("actor") not in ACTORS or not isinstance(body.get("payload", {}), dict):
            return jsonify({"error": "invalid request"}), 422
        message = dramatiq.Message(
            queue_name=QUEUE,
            actor_name=body["actor"],
            args=(),
            kwargs=body.get("payload", {}),
            options={},
            message_id=str(uuid.uuid4()),
        )
        broker.enqueue(message)
        status_url = f"/task/{message.message_id}"
        response = jsonify({"task_id": message.message_id, "state": "queued", "status_url": status_url})
        response.status_code = 202
        response.headers["Location"] = status_url
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
