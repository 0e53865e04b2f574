"""Cron schedules from Python: create, list, read, change, enable, disable, delete. The
HTTP API and the CLI call these; the scheduler role runs them (aqueue/scheduler.py).

    s = await aqueue.schedules.create(pool, {"type": "report.build", "cron": "0 3 * * *",
                                             "timezone": "Europe/Berlin"})
    await aqueue.schedules.update(pool, s.id, {"enabled": False})
"""

from __future__ import annotations

import uuid
from typing import Any

from aqueue import store
from aqueue.cron import Schedule, ScheduleSpec, check_schedule, next_tick, parse_schedule
from aqueue.store import Executor, ScheduleNameTaken

__all__ = [
    "ScheduleNameTaken",
    "ScheduleNotFound",
    "create",
    "delete",
    "get",
    "list_all",
    "sync_code_schedules",
    "update",
]

DEFAULT_MAX_PAYLOAD = 1_000_000


class ScheduleNotFound(LookupError):
    def __init__(self, schedule_id: uuid.UUID) -> None:
        super().__init__(f"no schedule with id {schedule_id}")


async def create(
    db: Executor, data: dict[str, Any], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
) -> Schedule:
    """A new schedule from a JSON-like dict (`type` and `cron` required; `name`,
    `timezone`, `payload`, `queue`, `priority`, `max_attempts`, `enabled`, `catch_up`
    optional). Its first run is its first tick from now. Raises ValidationError or
    ScheduleNameTaken."""
    spec = parse_schedule(data, max_payload_bytes)
    now = await store.database_now(db)
    return await store.insert_schedule(db, spec, next_tick(spec.cron, spec.timezone, now))


async def list_all(db: Executor) -> list[Schedule]:
    return await store.list_schedules(db)


async def get(db: Executor, schedule_id: uuid.UUID) -> Schedule:
    schedule = await store.get_schedule(db, schedule_id)
    if schedule is None:
        raise ScheduleNotFound(schedule_id)
    return schedule


async def update(
    db: Executor,
    schedule_id: uuid.UUID,
    changes: dict[str, Any],
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
) -> Schedule:
    """Change some fields (a PATCH). A new cron or time zone, or enabling it again,
    starts it afresh from its next tick after now; other changes keep its next run."""
    current = await get(db, schedule_id)
    spec = parse_schedule(changes, max_payload_bytes, base=current.spec())
    next_run_at = current.next_run_at
    retimed = (spec.cron, spec.timezone) != (current.cron, current.timezone)
    if retimed or (spec.enabled and not current.enabled):
        next_run_at = next_tick(spec.cron, spec.timezone, await store.database_now(db))
    updated = await store.update_schedule(db, schedule_id, spec, next_run_at)
    if updated is None:
        raise ScheduleNotFound(schedule_id)
    return updated


async def delete(db: Executor, schedule_id: uuid.UUID) -> None:
    if not await store.delete_schedule(db, schedule_id):
        raise ScheduleNotFound(schedule_id)


async def sync_code_schedules(
    db: Executor, specs: list[ScheduleSpec], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
) -> list[Schedule]:
    """The schedules declared in code (registry.schedule): created or updated by name,
    never duplicated, however many processes sync them at once."""
    now = await store.database_now(db)
    synced = []
    for spec in specs:
        checked = check_schedule(spec, max_payload_bytes)
        synced.append(
            await store.upsert_code_schedule(
                db, checked, next_tick(checked.cron, checked.timezone, now)
            )
        )
    return synced
