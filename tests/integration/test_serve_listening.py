"""`aqueue serve` logs "api listening" (and "metrics on ...") once the ports take
connections: tests and scripts start talking on that line, and were refused while uvicorn
was still starting (it called listen() only then)."""

from __future__ import annotations

import asyncio
import logging
import socket

from aqueue.registry import Registry
from aqueue.server import bind_socket, run_roles
from aqueue.settings import Settings


class ConnectOnLine(logging.Handler):
    """Connects to the socket the moment a line containing `text` is logged, in the
    logging call itself: nothing else of the process has run in between."""

    def __init__(self, text: str, address: tuple[str, int]) -> None:
        super().__init__()
        self.text = text
        self.address = address
        self.outcome: str | None = None
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text not in record.getMessage() or self.outcome is not None:
            return
        try:
            # a listening socket completes the handshake from its backlog
            with socket.create_connection(self.address, timeout=5):
                self.outcome = "connected"
        except ConnectionRefusedError:
            self.outcome = "refused"
        self.seen.set()


async def test_the_ports_take_connections_once_the_log_says_so(pool, db_url, caplog):
    caplog.set_level(logging.INFO, logger="aqueue.server")
    sock = bind_socket("127.0.0.1", 0)
    metrics_sock = bind_socket("127.0.0.1", 0)
    api = ConnectOnLine("api listening", sock.getsockname())
    metrics = ConnectOnLine("metrics on", metrics_sock.getsockname())
    settings = Settings(roles=("api",), port=sock.getsockname()[1]).with_overrides(
        metrics_port=metrics_sock.getsockname()[1]
    )
    logger = logging.getLogger("aqueue.server")
    logger.addHandler(api)
    logger.addHandler(metrics)
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(
            run_roles(pool, db_url, settings, Registry(), stop, sock, metrics_sock)
        )
        both_seen = asyncio.gather(api.seen.wait(), metrics.seen.wait())
        await asyncio.wait([both_seen, running], return_when=asyncio.FIRST_COMPLETED)
        both_seen.cancel()
        assert not running.done(), running.exception()
        stop.set()
        await running
    finally:
        logger.removeHandler(api)
        logger.removeHandler(metrics)
        sock.close()
        metrics_sock.close()
    assert (api.outcome, metrics.outcome) == ("connected", "connected")
