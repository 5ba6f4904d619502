"""Doubles of what can't run here (named as doubles wherever they are used)."""

import threading


class ServedDouble:
    """A double served by a socketserver in a thread: subclasses set ``self._server``."""

    def start(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
