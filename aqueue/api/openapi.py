"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aqueue.model import NAME_RE, JobStatus
from aqueue.store import DEPTH_KEYS
from aqueue.tokens import SCOPES

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}
_NOT_JSON = "Body not sent as application/json (or application/*+json)"
_TOO_LARGE = "Body over the size limit"
# a queue or job type name, as aqueue.model.check_name takes it ($ matches only at the
# very end in ECMA-262 regular expressions: no trailing newline slips through)
_NAME: dict[str, Any] = {"type": "string", "pattern": f"^{NAME_RE.pattern}$"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body_errors(invalid: str) -> dict[str, Any]:
    """The answers of a route that reads a JSON body, to a body it cannot use."""
    return {
        "400": _json(_ERROR, "Malformed or empty JSON"),
        "413": _json(_ERROR, _TOO_LARGE),
        "415": _json(_ERROR, _NOT_JSON),
        "422": _json(_ERROR, invalid),
    }


def _id_param() -> dict[str, Any]:
    return {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }


def openapi_document() -> dict[str, Any]:
    statuses = [s.value for s in JobStatus]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aqueue",
            "version": "0.1.0",
            "description": "A PostgreSQL-backed job queue. Every route but /healthz, "
            "/readyz and /metrics answers 400 to a Host header outside aqueue serve "
            "--allowed-hosts.",
        },
        "paths": {
            "/jobs": {
                "post": {
                    "summary": "Enqueue a job",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/NewJob"}}
                        },
                    },
                    "responses": {
                        "201": _json(_JOB, "Created"),
                        "200": _json(_JOB, "An idempotent repeat: the existing job"),
                        **_body_errors("Invalid job"),
                        "400": _json(
                            _ERROR, "Malformed or empty JSON, or depends_on names an unknown job"
                        ),
                    },
                },
                "get": {
                    "summary": "List jobs, newest first (keyset pagination)",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": statuses}},
                        {"name": "queue", "in": "query", "schema": _NAME},
                        {"name": "type", "in": "query", "schema": _NAME},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "next_cursor of the previous page",
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "jobs": {"type": "array", "items": _JOB},
                                    "next_cursor": {"type": ["string", "null"]},
                                },
                            },
                            "A page of jobs",
                        ),
                        "400": _json(_ERROR, "Bad filter"),
                    },
                },
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "A job with its dependencies and history of state changes",
                    "parameters": [
                        _id_param(),
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "number", "minimum": 0, "maximum": 30},
                            "description": "long-poll: answer when the job finishes, or "
                            "after this many seconds with the job as it is",
                        },
                    ],
                    "responses": {
                        "200": _json(_JOB, "The job"),
                        "400": _json(_ERROR, "Bad id or wait"),
                        "404": _json(_ERROR, "No such job"),
                    },
                }
            },
            "/jobs/{job_id}/cancel": _job_action(
                "Cancel a job that has not finished (a running one is stopped)"
            ),
            "/jobs/{job_id}/retry": _job_action(
                "Run a DEAD or CANCELLED job again with a fresh attempt budget"
            ),
            "/queues": {
                "get": {
                    "summary": "Every queue: depth by status, paused, oldest pending, "
                    "last minute's completed and failed attempts, live workers",
                    "responses": {"200": _json(_list_of("queues", _QUEUE), "The queues")},
                }
            },
            "/queues/depth": {
                "get": {
                    "summary": "For autoscalers: per queue, the jobs due and waiting for a "
                    "worker and the age of the oldest, in one cheap statement",
                    "parameters": [
                        {
                            "name": "queue",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "only these queues (repeat it, or a,b), each "
                            "answered even with nothing due; without it, every queue with due "
                            "jobs or a stored state",
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["queues"],
                                "properties": {
                                    "queues": {
                                        "type": "object",
                                        "additionalProperties": _QUEUE_DEPTH,
                                    }
                                },
                            },
                            "Queue name -> its depth",
                        ),
                        "400": _json(_ERROR, "A bad queue name or an unknown parameter"),
                    },
                }
            },
            "/queues/{name}/limits": {
                "put": {
                    "summary": "A queue's flow control, enforced in the claim across every "
                    "worker: the fields given are set (null removes one), the others kept",
                    "parameters": [_queue_param()],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _LIMITS}},
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "limits": _LIMITS},
                            },
                            "The queue's limits now",
                        ),
                        **_body_errors("A bad value, an unknown field, or no field"),
                        "400": _json(_ERROR, "Bad queue name, or malformed or empty JSON"),
                    },
                }
            },
            "/queues/{name}/pause": _queue_action(
                "Pause a queue: no worker claims from it", paused=True
            ),
            "/queues/{name}/resume": _queue_action("Resume a paused queue", paused=False),
            "/queues/{name}/retry-dead": _retry_dead(),
            "/schedules": {
                "post": {
                    "summary": "Create a cron schedule (type and cron required)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {**_SCHEDULE_BODY, "required": ["type", "cron"]}
                            }
                        },
                    },
                    "responses": {
                        "201": _json(_SCHEDULE, "Created"),
                        **_body_errors("Bad cron, time zone or field"),
                        "409": _json(_ERROR, "A schedule of that name exists"),
                    },
                },
                "get": {
                    "summary": "Every schedule, by name",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["schedules"],
                                "properties": {"schedules": {"type": "array", "items": _SCHEDULE}},
                            },
                            "The schedules",
                        )
                    },
                },
            },
            "/schedules/{schedule_id}": {
                "get": {
                    "summary": "One schedule",
                    "parameters": [_schedule_param()],
                    "responses": {
                        "200": _json(_SCHEDULE, "The schedule"),
                        "400": _json(_ERROR, _BAD_SCHEDULE_ID),
                        "404": _json(_ERROR, "No such schedule"),
                    },
                },
                "patch": {
                    "summary": "Change some fields (enabled: false disables it)",
                    "parameters": [_schedule_param()],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _SCHEDULE_BODY}},
                    },
                    "responses": {
                        "200": _json(_SCHEDULE, "The schedule"),
                        **_body_errors("Bad cron, time zone or field"),
                        "400": _json(_ERROR, f"{_BAD_SCHEDULE_ID}, or malformed or empty JSON"),
                        "404": _json(_ERROR, "No such schedule"),
                        "409": _json(_ERROR, "Another schedule has that name"),
                    },
                },
                "delete": {
                    "summary": "Delete a schedule",
                    "parameters": [_schedule_param()],
                    "responses": {
                        "204": {"description": "Deleted"},
                        "400": _json(_ERROR, _BAD_SCHEDULE_ID),
                        "404": _json(_ERROR, "No such schedule"),
                    },
                },
            },
            "/workers": {
                "get": {
                    "summary": "Every aqueue process seen lately: alive, lost or stopped",
                    "responses": {"200": _json(_list_of("workers", _WORKER), "The workers")},
                }
            },
            "/stats": {
                "get": {
                    "summary": "Finished attempts per queue and minute, the current minute "
                    "last: completed, and failed (RETRY or DEAD)",
                    "parameters": [
                        {
                            "name": "minutes",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 1440,
                                "default": 60,
                            },
                            "description": "the window, in minutes, the current one included",
                        }
                    ],
                    "responses": {
                        "200": _json(_STATS, "One series per queue with attempts in the window"),
                        "400": _json(_ERROR, "minutes out of range, or an unknown parameter"),
                    },
                }
            },
            "/submit-job": {
                "post": {
                    "summary": 'Compatibility: enqueue with {"task": type}',
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["task"],
                                    "properties": {
                                        "task": _NAME,
                                        **{
                                            name: field
                                            for name, field in _NEW_JOB["properties"].items()
                                            if name != "type"
                                        },
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(_JOB_ID, "Created"),
                        "200": _json(_JOB_ID, "An idempotent repeat: the existing job's id"),
                        **_body_errors("Invalid job"),
                        "400": _json(
                            _ERROR, "Malformed or empty JSON, or depends_on names an unknown job"
                        ),
                    },
                }
            },
            "/job-status/{job_id}": {
                "get": {
                    "summary": "Compatibility: status as pending/processing/completed/failed",
                    "parameters": [_id_param()],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "job_id": {"type": "string"},
                                    "task": {"type": "string"},
                                    "status": {
                                        "enum": ["pending", "processing", "completed", "failed"]
                                    },
                                    "retries": {"type": "integer"},
                                },
                            },
                            "Status",
                        ),
                        "400": _json(_ERROR, "Bad id"),
                        "404": _json(_ERROR, "No such job"),
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The web dashboard (one HTML page; it uses the routes here)",
                    "responses": {
                        "200": {"description": "The page", "content": {"text/html": {}}},
                        "304": {"description": "Not modified (If-None-Match named its ETag)"},
                    },
                }
            },
            "/dashboard/{name}": {
                "get": {
                    "summary": "A file of the dashboard (app.js, app.css, favicon.svg); with "
                    "?v= its current digest, cacheable for a year",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "v", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "The file"},
                        "304": {"description": "Not modified (If-None-Match named its ETag)"},
                        "404": _json(_ERROR, "No such file"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json(_PROBE, "The process answers")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness (database reachable)",
                    "responses": {
                        "200": _json(_PROBE, "Ready"),
                        "503": _json(
                            {**_PROBE, "required": ["status", "error"]},
                            "Database unreachable (the detail is logged)",
                        ),
                    },
                }
            },
            **SESSION_PATHS,
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this process (and the database gauges)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "NewJob": _NEW_JOB,
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "type": {"type": "string"},
                        "payload": {},
                        "status": {"enum": statuses},
                        "queue": {"type": "string"},
                        "priority": {"type": "integer"},
                        "attempts": {"type": "integer"},
                        "max_attempts": {"type": "integer"},
                        "run_after": {"type": "string", "format": "date-time"},
                        "last_error": {"type": ["string", "null"]},
                        "idempotency_key": {"type": ["string", "null"]},
                        "result": {},
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": ["string", "null"], "format": "date-time"},
                        "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        "timeout_seconds": {"type": ["number", "null"]},
                        "waiting_for": {"type": "integer"},
                        "concurrency_key": {"type": ["string", "null"]},
                        "fair_key": {"type": ["string", "null"]},
                        "depends_on": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    }


# text PostgreSQL stores: no NUL character (nor unpaired surrogates, which JSON Schema
# cannot say)
_NO_NUL = "^[^\\u0000]*$"
_FLOW_KEY: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NO_NUL}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field that also takes null, meaning the same as leaving it out."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*types, "null"]}


_NEW_JOB: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": _NAME,
        "payload": _or_null({"type": ["object", "array"]}),
        "queue": {**_NAME, "default": "default"},
        "priority": {"type": "integer", "default": 0, "minimum": -1000, "maximum": 1000},
        "run_after": _or_null({"type": "string", "format": "date-time"}),
        "max_attempts": {"type": "integer", "default": 5, "minimum": 1, "maximum": 100},
        "idempotency_key": _or_null(
            {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_NUL}
        ),
        "timeout_seconds": _or_null({"type": "number", "exclusiveMinimum": 0, "maximum": 604800}),
        "depends_on": _or_null(
            {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 1000}
        ),
        "concurrency_key": _or_null(
            {
                **_FLOW_KEY,
                "description": "at most the queue's key cap of jobs with this key run at once",
            }
        ),
        "fair_key": _or_null(
            {
                **_FLOW_KEY,
                "description": "the tenant the job counts for in the queue's fair share; "
                "not with depends_on",
            }
        ),
    },
}


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": item}},
    }


_QUEUE_DEPTH: dict[str, Any] = {
    "type": "object",
    "required": ["pending", "oldest_pending_seconds", "paused"],
    "properties": {
        "pending": {
            "type": "integer",
            "description": "PENDING or RETRY jobs due now, not waiting on dependencies "
            "(what the jobs_pending gauge counts; a paused queue's too)",
        },
        "oldest_pending_seconds": {
            "type": "number",
            "description": "how long the oldest of them has been due; 0 when none",
        },
        "paused": {"type": "boolean"},
    },
}
_COUNTS: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_STATS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "minutes": {"type": "integer"},
        "start": {
            "type": "string",
            "format": "date-time",
            "description": "the start of the first minute (on the database's clock)",
        },
        "now": {"type": "string", "format": "date-time"},
        "step_seconds": {"const": 60},
        "queues": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "completed": {**_COUNTS, "description": "one count per minute from start"},
                    "failed": {**_COUNTS, "description": "one count per minute from start"},
                },
            },
        },
    },
}
_LIMITS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "rate_limit": {
            "type": ["string", "null"],
            "description": "at most N jobs start per period: 20/s, 100/min, 1000/h",
            "examples": ["20/s", "100/min", "1000/h"],
        },
        "key_concurrency": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 10000,
            "description": "at most this many jobs of one concurrency_key run at once",
        },
        "key_limits": {
            "type": ["object", "null"],
            "propertyNames": _FLOW_KEY,
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 10000},
            "description": "caps for single keys, over key_concurrency",
        },
        "fair_weights": {
            "type": ["object", "null"],
            "propertyNames": _FLOW_KEY,
            "additionalProperties": {"type": "number", "minimum": 0.001, "maximum": 1000},
            "description": "fair_key -> weight (default 1): tenants share the queue by it",
        },
    },
}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_QUEUE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "paused", "limits", "depth"],
    "properties": {
        "name": {"type": "string"},
        "paused": {"type": "boolean"},
        "limits": _LIMITS,
        "fair": {"type": "boolean", "description": "claimed in fair order (a fair_key was used)"},
        "depth": {
            "type": "object",
            "description": "jobs by state",
            "required": list(DEPTH_KEYS),
            "properties": dict.fromkeys(DEPTH_KEYS, _COUNT),
        },
        "oldest_pending_seconds": {"type": ["number", "null"]},
        "completed_last_minute": _COUNT,
        "failed_last_minute": _COUNT,
        "workers": {"type": "array", "items": {"type": "string"}},
    },
}
_WORKER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "state"],
    "properties": {
        "id": {"type": "string"},
        "host": {"type": "string"},
        "pid": {"type": "integer"},
        "version": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "queues": {
            "type": "object",
            "description": "queue -> concurrency",
            "additionalProperties": {"type": "integer"},
        },
        "running": _COUNT,
        "started_at": _TIME,
        "last_heartbeat": _TIME,
        "stopped_at": {**_TIME, "type": ["string", "null"]},
        "state": {"enum": ["alive", "lost", "stopped"]},
    },
}


def _job_action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_id_param()],
            "responses": {
                "200": _json(_JOB, "The job after the action"),
                "400": _json(_ERROR, "Bad id"),
                "404": _json(_ERROR, "No such job"),
                "409": _json(_ERROR, "The job's status does not allow it"),
            },
        }
    }


def _queue_param() -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": _NAME}


def _queue_action(summary: str, paused: bool) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_queue_param()],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["name", "paused"],
                        "properties": {"name": {"type": "string"}, "paused": {"const": paused}},
                    },
                    "Done",
                ),
                "400": _json(_ERROR, "Bad queue name"),
            },
        }
    }


def _retry_dead() -> dict[str, Any]:
    return {
        "post": {
            "summary": 'Retry every DEAD job of a queue (body {"type": ...} optional)',
            "parameters": [_queue_param()],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "type": {**_NAME, "type": ["string", "null"]},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["name", "type", "retried"],
                        "properties": {
                            "name": {"type": "string"},
                            "type": {"type": ["string", "null"]},
                            "retried": {"type": "integer", "minimum": 0},
                        },
                    },
                    "How many DEAD jobs are PENDING again",
                ),
                "400": _json(_ERROR, "Bad queue name or type, or a body that is not one"),
                "413": _json(_ERROR, _TOO_LARGE),
                "415": _json(_ERROR, _NOT_JSON),
            },
        }
    }


_BAD_SCHEDULE_ID = "Not a schedule id (a UUID)"
_JOB_ID: dict[str, Any] = {
    "type": "object",
    "required": ["job_id"],
    "properties": {"job_id": {"type": "string", "format": "uuid"}},
}
_PROBE: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}, "error": {"type": "string"}},
}
_SCHEDULE_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {**_NAME, "type": ["string", "null"], "description": "null: made from the type"},
        "cron": {
            "type": "string",
            "description": "5 fields, or 6 with seconds first; e.g. */5 * * * *",
            "examples": ["*/5 * * * *", "0 30 9 * * 1-5"],
        },
        "timezone": {
            "type": "string",
            "default": "UTC",
            "description": "an IANA time zone",
            "examples": ["UTC", "Europe/Berlin"],
        },
        "type": _NAME,
        "payload": {"type": ["object", "array", "null"], "description": "null: {}"},
        "queue": {**_NAME, "default": "default"},
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "enabled": {"type": "boolean", "default": True},
        "catch_up": {
            "type": "boolean",
            "default": True,
            "description": "after downtime: one run for the missed ticks (true) or none",
        },
    },
}
_SCHEDULE: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_SCHEDULE_BODY["properties"],
        "id": {"type": "string", "format": "uuid"},
        "source": {"enum": ["api", "code"]},
        "next_run_at": {"type": "string", "format": "date-time"},
        "last_run_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def _schedule_param() -> dict[str, Any]:
    return {
        "name": "schedule_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }


_SESSION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "auth": {"type": "boolean", "description": "whether this server checks tokens"},
        "name": {"type": ["string", "null"], "description": "the signed-in token's name"},
        "scopes": {"type": "array", "items": {"enum": list(SCOPES)}},
    },
}

SESSION_PATHS: dict[str, Any] = {
    "/session": {
        "post": {
            "summary": "Sign in (the dashboard): keep a token in an HTTP-only cookie",
            "description": "Sets the cookies aqueue_token (HTTP-only) and aqueue_csrf "
            "(repeat its value in X-CSRF-Token on requests that change something).",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["token"],
                            "properties": {"token": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_SESSION, "Signed in"),
                "400": _json(_ERROR, "Malformed JSON"),
                "401": _json(_ERROR, "Unknown, revoked or expired token"),
                "409": _json(_ERROR, "Authentication is off on this server"),
                "413": _json(_ERROR, "Body too large"),
                "415": _json(_ERROR, _NOT_JSON),
                "422": _json(_ERROR, "No token in the body"),
            },
        },
        "get": {
            "summary": "Who is signed in",
            "responses": {
                "200": _json(_SESSION, "The session (auth false: no tokens on this server)"),
                "401": _json(_ERROR, "No valid token"),
            },
        },
        "delete": {
            "summary": "Sign out: the cookies are cleared",
            "responses": {"204": {"description": "Signed out"}},
        },
    }
}

_BEARER = "bearer"


def with_security(
    document: dict[str, Any], scopes: Mapping[tuple[str, str], tuple[str, ...]]
) -> dict[str, Any]:
    """The document of a server that checks tokens: each operation with the scopes that
    may call it (from the routes' own declarations, keyed by (path, method)), and its 401
    and 403; public ones with an empty `security`."""
    document["components"]["securitySchemes"] = {
        _BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "a token from `aqueue tokens create`, or the --api-token",
        }
    }
    document["security"] = [{_BEARER: []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needed = scopes.get((path, method))
            if needed is None:
                continue
            if not needed:
                operation["security"] = []
                continue
            operation["description"] = (
                operation.get("description", "") + f" Scope: {' or '.join(needed)}."
            ).strip()
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _json(_ERROR, "No token, or an invalid one"))
            responses.setdefault("403", _json(_ERROR, f"The token lacks {' or '.join(needed)}"))
    return document
