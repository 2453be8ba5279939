"""The Celery application of the celery backend and the RabbitMQ topology it declares.

Topology (every queue durable and of type ``quorum``, replicated when the
broker is a cluster):

- ``wbdwi.gpu`` and ``wbdwi.cpu``: jobs per device class, bound to the direct
  exchange ``wbdwi`` with routing keys ``gpu`` and ``cpu``. Their
  ``x-delivery-limit`` is ``[queue] delivery_limit``: a message handed back
  more than that many times without being acknowledged (its worker died, or
  refused it) goes to the dead-letter exchange ``wbdwi.dlx`` instead of being delivered
  again (at-least-once dead-lettering, ``x-overflow = reject-publish``).
- ``wbdwi.dead``: bound to ``wbdwi.dlx`` (fanout); the receiver consumes it and
  marks each job there failed with the reason (``wbdwi status``).
- ``wbdwi.events``: what workers report (:class:`~service.queue_celery.messages.JobEvent`);
  the receiver consumes it.

Celery settings that make a job survive a dying worker: ``task_acks_late``
(the message is acknowledged after the job, never before),
``task_reject_on_worker_lost`` (a pool process that dies hands its message
back instead of acknowledging it), ``worker_prefetch_multiplier = 1`` (a worker
holds one job at a time, the others stay for other workers), publisher
confirms (``confirm_publish``: a publish returns once the broker has the
message). No result backend (results go back as events), no ETA or countdown
(quorum queues and long jobs do not mix with them). The broker's
``consumer_timeout`` must be longer than the longest exam (``deploy/README.md``).
"""

from __future__ import annotations

from typing import Any

import kombu.entity
from celery import Celery

__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_QUEUE",
    "DEVICE_CLASSES",
    "EVENTS_QUEUE",
    "JOB_EXCHANGE",
    "TASK_NAME",
    "dead_queue",
    "events_queue",
    "job_queue",
    "job_queue_name",
    "make_app",
]

#: Device classes, one job queue each.
DEVICE_CLASSES = ("gpu", "cpu")
JOB_EXCHANGE = "wbdwi"
DEAD_LETTER_EXCHANGE = "wbdwi.dlx"
DEAD_QUEUE = "wbdwi.dead"
EVENTS_QUEUE = "wbdwi.events"
#: The Celery task that runs one job.
TASK_NAME = "wbdwi.run_job"

_QUORUM = {"x-queue-type": "quorum"}
# kombu is partly annotated; its constructors are used untyped.
Queue: Any = kombu.entity.Queue
Exchange: Any = kombu.entity.Exchange


def job_queue_name(device_class: str) -> str:
    """``wbdwi.gpu`` or ``wbdwi.cpu``; ``ValueError`` for another class."""
    if device_class not in DEVICE_CLASSES:
        raise ValueError(f"queue must be one of {', '.join(DEVICE_CLASSES)}, got {device_class!r}")
    return f"{JOB_EXCHANGE}.{device_class}"


def job_queue(device_class: str, delivery_limit: int) -> Any:
    """The quorum queue of ``device_class`` with its dead-letter exchange and delivery limit."""
    return Queue(
        job_queue_name(device_class),
        Exchange(JOB_EXCHANGE, type="direct", durable=True),
        routing_key=device_class,
        durable=True,
        queue_arguments={
            **_QUORUM,
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def dead_queue() -> Any:
    """Where the job queues' dead letters go."""
    return Queue(
        DEAD_QUEUE,
        Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True),
        routing_key="",
        durable=True,
        queue_arguments=dict(_QUORUM),
    )


def events_queue() -> Any:
    """The workers' reports to the receiver."""
    return Queue(
        EVENTS_QUEUE,
        Exchange("", type="direct"),
        routing_key=EVENTS_QUEUE,
        durable=True,
        queue_arguments=dict(_QUORUM),
    )


def make_app(broker_url: str, delivery_limit: int) -> Any:
    """The Celery application shared by the receiver (publishes) and the workers (consume)."""
    app = Celery("wbdwi", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[job_queue(device, delivery_limit) for device in DEVICE_CLASSES],
        task_default_queue=job_queue_name("gpu"),
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_detect_quorum_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=30,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
    )
    return app
