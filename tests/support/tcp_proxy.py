"""TCP between the bot and PostgreSQL on 127.0.0.1, for a server that comes up late or stops answering."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """Forwards to `127.0.0.1:port` once `start()` listens (on a free port, or on the one the bot was given
    before anything listened there: a server not up yet). `vanished = True` makes the server stop answering
    without closing anything, as a failed-over primary whose address now leads nowhere (no FIN, no RST)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.vanished = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        """Listen on `port` (0: a free one); the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not self.vanished:
                    target.write(data)
                    await target.drain()
            if not self.vanished:  # one side closed: so does the other (asyncpg waits for it after its Terminate)
                target.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
