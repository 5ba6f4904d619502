"""The API's HTTP protocol sets TCP_NODELAY on sockets asyncio leaves alone."""

import socket

from gopbx_api.server import set_no_delay


class Transport:
    def __init__(self, sock):
        self.sock = sock

    def get_extra_info(self, name):
        return self.sock if name == "socket" else None


def test_an_accepted_socket_of_a_protocol_0_listener_gets_no_delay():
    # As uvicorn binds it with --workers > 1: protocol 0, so asyncio skips TCP_NODELAY.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert accepted.proto == 0 and not accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        set_no_delay(Transport(accepted))
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        for sock in (client, accepted, listener):
            sock.close()
