"""
uvicorn's HTTP protocol with TCP_NODELAY on every connection.

With --workers > 1 uvicorn binds the listening socket itself, as
socket(AF_INET, SOCK_STREAM) with protocol 0, and asyncio sets TCP_NODELAY only
on sockets whose protocol reads IPPROTO_TCP. Without it, each response's header
and body writes meet Nagle's algorithm and the peer's delayed ACK: every request
after the first on a kept-alive connection (Nginx's upstream pool) waited ~40 ms.
Used as `uvicorn --http gopbx_api.server:NoDelayH11Protocol`.
"""

import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


def set_no_delay(transport):
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport):
        set_no_delay(transport)
        super().connection_made(transport)
