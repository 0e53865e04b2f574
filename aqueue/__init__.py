"""aqueue: a PostgreSQL-backed job queue for asyncio.

Public API: define handlers on a `Registry`, put jobs on queues with `enqueue` /
`enqueue_many`, and run `aqueue serve --app module:registry` to work them off.
"""

from aqueue.model import Job, JobSpec, JobStatus, ValidationError
from aqueue.producer import enqueue, enqueue_many
from aqueue.registry import JobContext, Registry

__all__ = [
    "Job",
    "JobContext",
    "JobSpec",
    "JobStatus",
    "Registry",
    "ValidationError",
    "enqueue",
    "enqueue_many",
]
