"""Backend ``celery`` of the job queue: one receiver, many workers, RabbitMQ in between (issue 15).

- :mod:`~service.queue_celery.config`: the Celery application and the RabbitMQ
  topology (quorum queues per device class, dead letters, events);
- :mod:`~service.queue_celery.messages`: the job envelope and the job events;
- :mod:`~service.queue_celery.receiver`: publishes the ledger's ready jobs and
  applies the workers' reports to it (results sent once, whichever worker);
- :mod:`~service.queue_celery.worker`: the task that runs one job, and one
  worker process (``wbdwi worker``).

Celery and kombu are imported only when this backend is chosen (``[queue]
backend = "celery"``); the default ``sqlite`` backend needs no broker.
"""
