"""A misbehaving-on-request HTTP/1.1 server for the load tests (run as a separate process).

    python tests/load_server.py        -> prints "PORT <n>" and serves on 127.0.0.1

One thread per connection and blocking sockets, so ``time.sleep`` delays are precise to a few
tens of microseconds and no event loop sits between a request and its answer. Paths:

  /ok                  200 "ok"
  /status/<code>       that status
  /sleep/<ms>          answer after ms milliseconds
  /dist                answer after the next delay of the sequence set by POST /config
  /held                JSON list of how long each /dist answer was held (then reset)
  /stall/<period>/<ms> answer at once, except during the first <ms> of every <period> ms
                       (measured from the server's start), when answers wait for the window end
  /echo                200 with the request body; 400 when the body is not JSON with key "n"
  /close               answer with Connection: close
  /garbage             bytes that are not HTTP
  /cut                 headers promising 1000 bytes, 10 bytes, then close
  /huge                headers promising 1 GB, then bytes until the client goes away
  /hang                never answer
  /count               200 with the number of requests served so far (then reset)
  /redirect/<path>     302 to /<path> on this server
  /away                302 to http://192.0.2.1/ (a documentation address: must never be followed)

    python tests/load_server.py CERT KEY   -> also serves TLS, printing "TLSPORT <n>" first
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from typing import Any

START = time.monotonic()
_lock = threading.Lock()
_delays: list[float] = []
_delay_index = [0]
_served = [0]
_held: list[float] = []  # /dist: how long each answer was actually held (server clock)


def _response(status: int, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
        f"{extra}\r\n"
    ).encode() + body


def _sleep_precisely(seconds: float) -> None:
    # no spinning: a spinning thread holds the GIL and delays every other connection's thread
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        time.sleep(left)


def _read_request(conn: socket.socket, buf: bytearray) -> tuple[str, str, bytes] | None:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    body, remainder = rest[:length], rest[length:]
    buf[:] = remainder
    return method, path, body


def handle(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        while True:
            request = _read_request(conn, buf)
            if request is None:
                return
            method, path, body = request
            with _lock:
                _served[0] += 1
            parts = path.strip("/").split("/")
            kind = parts[0]
            if kind == "ok":
                answer = _response(200, b"ok")
                conn.sendall(answer[: -len(b"ok")] if method == "HEAD" else answer)
            elif kind == "status":
                conn.sendall(_response(int(parts[1]), b"status"))
            elif kind == "sleep":
                _sleep_precisely(float(parts[1]) / 1000)
                conn.sendall(_response(200, b"slept"))
            elif kind == "config":
                with _lock:
                    _delays[:] = json.loads(body)
                    _delay_index[0] = 0
                conn.sendall(_response(200, b"configured"))
            elif kind == "dist":
                received = time.perf_counter()
                with _lock:
                    delay = _delays[_delay_index[0] % len(_delays)]
                    _delay_index[0] += 1
                _sleep_precisely(delay)
                answered = time.perf_counter()
                # logged before the answer leaves: a client that reads /held right after its
                # last answer must find it there (logged after, one was missing on a busy machine)
                with _lock:
                    _held.append(answered - received)
                conn.sendall(_response(200, b"d"))
            elif kind == "held":
                with _lock:
                    held, _held[:] = list(_held), []
                conn.sendall(_response(200, json.dumps(held).encode()))
            elif kind == "stall":
                period, stall = float(parts[1]) / 1000, float(parts[2]) / 1000
                phase = (time.monotonic() - START) % period
                if phase < stall:
                    time.sleep(stall - phase)
                conn.sendall(_response(200, b"s"))
            elif kind == "echo":
                try:
                    ok = "n" in json.loads(body)
                except ValueError:
                    ok = False
                conn.sendall(_response(200 if ok else 400, body))
            elif kind == "close":
                conn.sendall(_response(200, b"bye", "Connection: close\r\n"))
                return
            elif kind == "garbage":
                conn.sendall(b"\x00\x01 this is not HTTP at all \xff\r\n\r\n")
            elif kind == "cut":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                return
            elif kind == "huge":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                chunk = b"x" * 65536
                while True:
                    conn.sendall(chunk)
            elif kind == "hang":
                time.sleep(3600)
            elif kind == "redirect":
                location = "/" + "/".join(parts[1:])
                conn.sendall(_response(302, b"", f"Location: {location}\r\n"))
            elif kind == "away":
                conn.sendall(_response(302, b"", "Location: http://192.0.2.1/\r\n"))
            elif kind == "count":
                with _lock:
                    served, _served[0] = _served[0] - 1, 0
                conn.sendall(_response(200, str(served).encode()))
            else:
                conn.sendall(_response(404, b"no such path"))
    except OSError:
        return
    finally:
        conn.close()


def _listen() -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


def _serve(listener: socket.socket, wrap: Any = None) -> None:
    while True:
        conn, _ = listener.accept()
        if wrap is not None:
            try:
                conn = wrap(conn)
            except OSError:  # a client that refused our certificate
                conn.close()
                continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main() -> None:
    # 40 connection threads waking together queue for the GIL; the default 5 ms switch interval
    # would turn that queue into tens of milliseconds of latency nobody asked for
    sys.setswitchinterval(0.0001)
    if len(sys.argv) == 3:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[1], sys.argv[2])
        tls = _listen()
        print(f"TLSPORT {tls.getsockname()[1]}", flush=True)

        def wrap(conn: socket.socket) -> socket.socket:
            return context.wrap_socket(conn, server_side=True)

        threading.Thread(target=_serve, args=(tls, wrap), daemon=True).start()
    listener = _listen()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    _serve(listener)


if __name__ == "__main__":
    sys.exit(main())
