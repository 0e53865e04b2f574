"""aqueue: a PostgreSQL-backed job queue for asyncio.

Public API: define handlers on a `Registry`, put jobs on queues with `enqueue` /
`enqueue_many`, and run `aqueue serve --app module:registry` to work them off.
"""

from aqueue.control import (
    JobNotFound,
    JobStateError,
    cancel,
    limits,
    pause,
    queues,
    resume,
    retry,
    retry_dead,
    set_limits,
    workers,
)
from aqueue.model import Job, JobSpec, JobStatus, ValidationError
from aqueue.producer import enqueue, enqueue_many
from aqueue.registry import JobContext, Registry
from aqueue.waiting import wait

__all__ = [
    "Job",
    "JobContext",
    "JobNotFound",
    "JobSpec",
    "JobStateError",
    "JobStatus",
    "Registry",
    "ValidationError",
    "cancel",
    "enqueue",
    "enqueue_many",
    "limits",
    "pause",
    "queues",
    "resume",
    "retry",
    "retry_dead",
    "set_limits",
    "wait",
    "workers",
]
