"""Job routes: parse -> model/store -> JSON. Nothing here speaks SQL."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import control, producer, store
from aqueue.api.auth import requires
from aqueue.api.errors import ApiError, read_json
from aqueue.model import (
    COMPAT_STATUS,
    FINAL_STATUSES,
    Job,
    JobSpec,
    JobStatus,
    ValidationError,
    check_name,
    failed_attempts,
    parse_job_id,
    parse_job_spec,
)
from aqueue.settings import Settings
from aqueue.waiting import wait_until_finished

MAX_PAGE = 500
# the longest long-poll: under the usual proxy and load-balancer idle timeouts
MAX_WAIT_SECONDS = 30
DEFAULT_PAGE = 50
LIST_PARAMS = frozenset({"status", "queue", "type", "limit", "cursor"})
# Room for the rest of a job's fields around the largest payload allowed.
BODY_OVERHEAD = 16_384


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _body(request: Request) -> Any:
    return await read_json(request, _settings(request).max_payload_bytes + BODY_OVERHEAD)


@requires("enqueue")
async def create_job(request: Request) -> JSONResponse:
    data = await _body(request)
    try:
        spec = parse_job_spec(data, _settings(request).max_payload_bytes)
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    job, created = await _submit(request, spec)
    return JSONResponse(job.to_json(), status_code=201 if created else 200)


async def _submit(request: Request, spec: JobSpec) -> tuple[Job, bool]:
    try:
        return await producer.submit(request.app.state.pool, spec, request.app.state.metrics)
    except store.UnknownDependency as exc:
        raise ApiError(400, str(exc)) from None


@requires("read")
async def list_jobs(request: Request) -> JSONResponse:
    params = request.query_params
    unknown = sorted(set(params) - LIST_PARAMS)
    if unknown:
        raise ApiError(
            400,
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(LIST_PARAMS))}",
        )
    try:
        status = _parse_status(params.get("status"))
        queue = check_name("queue", params["queue"]) if "queue" in params else None
        type_ = check_name("type", params["type"]) if "type" in params else None
        limit = _parse_limit(params.get("limit"))
        after = decode_cursor(params["cursor"]) if "cursor" in params else None
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    page = await store.list_jobs(
        request.app.state.pool,
        status=status,
        queue=queue,
        type=type_,
        after=after,
        limit=limit,
        scan_limit=_settings(request).list_scan_limit,
    )
    return JSONResponse(
        {
            "jobs": [job.to_json() for job in page.jobs],
            "next_cursor": str(page.next_after) if page.next_after else None,
        }
    )


@requires("read")
async def get_job(request: Request) -> JSONResponse:
    """The job with its history; with `?wait=S` (at most 30), a long-poll: the answer
    comes as soon as the job finishes, or after S seconds with the job as it is then."""
    unknown = sorted(set(request.query_params) - {"wait"})
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; allowed: wait")
    wait = _parse_wait(request.query_params.get("wait"))
    job = await _find_job(request)
    pool = request.app.state.pool
    if wait and job.status not in FINAL_STATUSES:
        try:
            job = await wait_until_finished(pool, job.id, wait, request.app.state.notifier)
        except store.JobNotFound:
            raise ApiError(404, f"no job with id {job.id}") from None
    body = job.to_json()
    body["depends_on"] = [str(i) for i in await store.job_dependencies(pool, job.id)]
    events = await store.job_events(pool, job.id)
    body["events"] = [event.to_json() for event in events]
    return JSONResponse(body)


def _parse_wait(value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise ApiError(
            400, f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS}, got {value!r}"
        )
    return seconds


@requires("admin")
async def cancel_job(request: Request) -> JSONResponse:
    return await _job_action(request, control.cancel)


@requires("admin")
async def retry_job(request: Request) -> JSONResponse:
    return await _job_action(request, control.retry)


async def _job_action(
    request: Request, action: Callable[[asyncpg.Pool, uuid.UUID], Awaitable[Job]]
) -> JSONResponse:
    """An operator's action on one job: 404 for no such job, 409 (saying why) for a job
    whose status does not allow it."""
    job_id = _job_id(request)
    try:
        job = await action(request.app.state.pool, job_id)
    except store.JobNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except store.JobStateError as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(job.to_json())


@requires("enqueue")
async def submit_job_compat(request: Request) -> JSONResponse:
    """The simple clients' `POST /submit-job {"task": ...}` -> `{"job_id"}`."""
    data = await _body(request)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    if "task" not in data:
        raise ApiError(422, "'task' is required (the job type, e.g. \"demo.sleep\")")
    if "type" in data:
        raise ApiError(422, "send either 'task' (this route) or 'type' (POST /jobs), not both")
    fields = {("type" if k == "task" else k): v for k, v in data.items()}
    try:
        spec = parse_job_spec(fields, _settings(request).max_payload_bytes)
    except ValidationError as exc:
        raise ApiError(422, str(exc).replace("'type'", "'task'")) from None
    job, created = await _submit(request, spec)
    return JSONResponse({"job_id": str(job.id)}, status_code=201 if created else 200)


@requires("enqueue", "read")
async def job_status_compat(request: Request) -> JSONResponse:
    """The simple clients' `GET /job-status/{id}` with their status words."""
    job = await _find_job(request)
    return JSONResponse(
        {
            "job_id": str(job.id),
            "task": job.type,
            "status": COMPAT_STATUS[job.status],
            "retries": failed_attempts(job),
        }
    )


def _job_id(request: Request) -> uuid.UUID:
    try:
        return parse_job_id(request.path_params["job_id"])
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None


async def _find_job(request: Request) -> Job:
    job_id = _job_id(request)
    job = await store.get_job(request.app.state.pool, job_id)
    if job is None:
        raise ApiError(404, f"no job with id {job_id}")
    return job


def _parse_status(value: str | None) -> JobStatus | None:
    if value is None:
        return None
    try:
        return JobStatus(value.upper())
    except ValueError:
        raise ValidationError(
            f"status {value!r} is not one of {', '.join(s.value for s in JobStatus)}"
        ) from None


def _parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    # the length first: int() refuses strings of thousands of digits (a 500 otherwise)
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > 6
        or not 1 <= int(value) <= MAX_PAGE
    ):
        raise ValidationError(
            f"limit must be a whole number from 1 to {MAX_PAGE}, got {value[:20]!r}"
        )
    return int(value)


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(cursor)
    except ValueError:
        raise ValidationError(f"cursor {cursor!r} is not one this API returned") from None


routes = [
    Route("/jobs", create_job, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/submit-job", submit_job_compat, methods=["POST"]),
    Route("/job-status/{job_id}", job_status_compat, methods=["GET"]),
]
