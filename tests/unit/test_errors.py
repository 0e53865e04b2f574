"""Which database errors the worker, completer, notifier and reaper ride out (a transient
state of the server or the network) and which end the process (a bug, a bad statement).
Real asyncpg exception instances, classified by SQLSTATE."""

from __future__ import annotations

import asyncpg
import pytest

from aqueue.db import is_connection_error

TRANSIENT = [
    ConnectionRefusedError(111, "Connection refused"),
    OSError(113, "No route to host"),
    TimeoutError(),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.ConnectionFailureError("connection failure"),
    asyncpg.ClientCannotConnectError("cannot connect"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.InterfaceError(
        "cannot call Connection.fetch(): connection has been released back to the pool"
    ),
    # a statement on an idle connection whose server just sent its FATAL goodbye
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 11; another operation (2) is in progress"
    ),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.OutOfMemoryError("out of memory"),
    asyncpg.DiskFullError("could not extend file: No space left on device"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.IdleSessionTimeoutError("terminating connection due to idle timeout"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
    asyncpg.SerializationError("could not serialize access"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    # a class 08 SQLSTATE asyncpg has no class for still counts as a connection exception
    asyncpg.PostgresError.new({"C": "08Z99", "M": "some new connection failure"}),
]

FATAL = [
    ValueError("not a database error"),
    RuntimeError("a bug"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.InterfaceError("pool is closed"),
    asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
    asyncpg.DataError("invalid input for query argument $1: 'x' (an integer is required)"),
    asyncpg.exceptions.ClientConfigurationError("invalid connection option"),
    asyncpg.exceptions.InternalClientError("unexpected codec"),
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 11; another operation (12) is in progress"
    ),
    asyncpg.exceptions.ProtocolError("unexpected message"),
    asyncpg.PostgresSyntaxError('syntax error at or near "SELEC"'),
    asyncpg.UndefinedTableError('relation "jobz" does not exist'),
    asyncpg.UndefinedColumnError('column "nope" does not exist'),
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.CheckViolationError("new row violates check constraint"),
    asyncpg.InvalidTextRepresentationError("invalid input syntax for type uuid"),
    asyncpg.InsufficientPrivilegeError("permission denied for table jobs"),
    asyncpg.ProtocolViolationError("bind message supplies 1 parameters, but 2 are required"),
    asyncpg.exceptions.ConfigurationLimitExceededError("temporary file size exceeds limit"),
    asyncpg.exceptions.DatabaseDroppedError("terminating connection: database dropped"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}-{e}")
def test_a_transient_server_or_network_state_is_retried(exc):
    assert is_connection_error(exc)


@pytest.mark.parametrize("exc", FATAL, ids=lambda e: f"{type(e).__name__}-{e}")
def test_a_programming_or_statement_error_is_not_retried(exc):
    assert not is_connection_error(exc)
