"""An HTTP view of a running scan: the reducer's published state, parameters and status.

The server is the standard library's ``ThreadingHTTPServer`` on a background thread, not
tornado: every source it serves (``published()``, ``status()``, :class:`Parameters`) is a
plain blocking call, so a thread per request is the natural fit, and one slow download of
a big array never holds up the small requests a dashboard polls with. It needs nothing
beyond the standard library, and there is no event loop to share with panel or Jupyter.

Routes (everything else is 404, another method on a known route 405)::

    GET  /results                   index: {name: {type, shape, dtype[, keys]}}
    GET  /results/<key>[/<sub>...]  a value: arrays as .npy bytes (?format=json for JSON)
    GET  /results/<key>/<slice>     a slice of an array, numpy basic indexing: 100:110,:
    GET  /parameters                {"version", "values"}
    GET  /parameters/history        every version
    POST /parameters                JSON changes; needs "Authorization: Bearer <token>"
    GET  /status                    JSON of status()

No pickle: arrays go out with ``np.save(..., allow_pickle=False)``, all else as JSON.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from framescope.errors import ParameterError

from ._params import Parameters
from ._resultview import ViewError, describe, is_array, npy_bytes, select, to_json

__all__ = ["ResultsServer"]

logger = logging.getLogger(__name__)

_MAX_BODY = 1 << 20  # a parameter update is a few hundred bytes
_ROUTES = {"results": ("GET",), "parameters": ("GET", "POST"),
           "parameters/history": ("GET",), "status": ("GET",)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, **headers: str) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), headers=headers)

    def _handle(self) -> None:
        headers: dict[str, str] = {}
        try:
            self._route(headers)
        except ViewError as err:
            if err.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="framescope"'
            self._json({"error": err.message}, err.status, **headers)
        except Exception as err:
            logger.exception("results server: %s %s failed", self.command, self.path)
            self._json({"error": f"{type(err).__name__}: {err}"}, 500)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _route(self, headers: dict[str, str]) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        segs = [unquote(s) for s in url.path.split("/") if s]
        n = 2 if segs[:2] == ["parameters", "history"] else 1
        route = "/".join(segs[:n])
        if route not in _ROUTES or (route != "results" and len(segs) > n):
            raise ViewError(404, f"no route {url.path!r}; expected one of "
                            + ", ".join("/" + r for r in _ROUTES))
        if self.command not in _ROUTES[route]:
            headers["Allow"] = ", ".join(_ROUTES[route])
            raise ViewError(405, f"{self.command} {url.path}: allowed {headers['Allow']}")
        owner = self.server.owner
        if route == "results":
            self._results(owner, segs[1:], parse_qs(url.query))
        elif route == "status":
            if owner.status is None:
                raise ViewError(404, "this server has no status source")
            self._json(to_json(owner.status(), "status"))
        else:
            self._parameters(owner, route, body)

    def _results(self, owner: ResultsServer, segs: list[str],
                 query: dict[str, list[str]]) -> None:
        fmt = query.get("format", [None])[-1]
        if fmt not in (None, "npy", "json"):
            raise ViewError(400, f"format: expected 'npy' or 'json', found {fmt!r}")
        state = owner.published()  # once per request: everything served is one state
        if not segs:
            self._json({str(k): describe(v) for k, v in state.items()})
            return
        value, path = select(state, segs)
        if is_array(value) and fmt != "json":
            self._send(200, npy_bytes(value, path), "application/octet-stream")
        elif fmt == "npy":
            raise ViewError(400, f"{path}: a {describe(value)['type']}, not an array; "
                            f".npy is for arrays, drop ?format=npy")
        else:
            self._json(to_json(value, path))

    def _parameters(self, owner: ResultsServer, route: str, body: bytes) -> None:
        params = owner.parameters
        if params is None:
            raise ViewError(404, "this server has no parameters")
        if route == "parameters/history":
            self._json(params.history())
        elif self.command == "GET":
            version, values = params.snapshot()
            self._json({"version": version, "values": values})
        else:
            owner._check_token(self.headers.get("Authorization"))  # before reading its body
            changes = self._json_object(body)
            try:
                version = params.update(changes, source="http")
            except ParameterError as err:
                raise ViewError(400, str(err)) from err
            self._json({"version": version})

    def _read_body(self) -> bytes:
        # read before answering, even a refusal: closing a socket with unread bytes
        # resets the connection, and the client may lose the answer
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > _MAX_BODY:
            raise ViewError(413 if length.isdigit() else 400, "request body: expected a "
                            f"Content-Length of at most {_MAX_BODY} bytes, found {length!r}")
        return self.rfile.read(int(length))

    def _json_object(self, raw: bytes) -> dict[str, Any]:
        if self.headers.get("Content-Length") is None:
            raise ViewError(411, "request body: expected a Content-Length header, found none")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ViewError(400, f"request body: expected JSON, found {raw[:80]!r} "
                            f"({err})") from err
        if not isinstance(body, dict):
            raise ViewError(400, "request body: expected a JSON object of parameter "
                            f"changes, found {type(body).__name__}")
        return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ResultsServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        super().__init__(address, _Handler)


class ResultsServer:
    """Serve a reducer's published state, the parameters and a status over HTTP.

    Parameters
    ----------
    published : callable
        Returns the current state, a mapping of name → numpy array, scalar, str, list or
        nested mapping. Called once per request, from the server's threads: make it cheap
        and thread-safe, and return a new array rather than mutating a served one (the
        server copies what it sends, but the copy can still race an in-place write).
    parameters : Parameters, optional
        Served at ``/parameters``; writable over HTTP only when `token` is set.
    status : callable, optional
        Returns a JSON-able mapping for ``/status``.
    host : str
        The address to bind; loopback by default.
    port : int
        0 picks a free port (see :attr:`url`).
    token : str, optional
        The bearer token ``POST /parameters`` must send; without one the server is
        read-only. Compared in constant time.

    Examples
    --------
    >>> with ResultsServer(lambda: {"sum": np.arange(4)}) as srv:  # doctest: +SKIP
    ...     np.load(io.BytesIO(urllib.request.urlopen(srv.url + "/results/sum").read()))
    array([0, 1, 2, 3])
    """

    def __init__(self, published: Callable[[], Mapping[str, Any]],
                 parameters: Parameters | None = None,
                 status: Callable[[], Mapping[str, Any]] | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError(f"token: expected a non-empty str or None, found {token!r}")
        self.published, self.parameters, self.status = published, parameters, status
        self.host, self._port, self._token = host, port, token
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _check_token(self, authorization: str | None) -> None:
        """Raise the HTTP error for a missing or wrong bearer token (403 when read-only)."""
        if self._token is None:
            raise ViewError(403, "read-only server: it was started without a token, so "
                             "parameters cannot be changed over HTTP")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token.encode()):
            raise ViewError(401, "expected header 'Authorization: Bearer <token>' with "
                             "this server's token, found " + ("none" if not authorization
                                                              else "a different one"))

    def start(self) -> ResultsServer:
        """Bind and serve on a daemon thread; returns self (a no-op when running)."""
        if self._httpd is None:
            self._httpd = _Server((self.host, self._port), self)
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name=f"framescope-results-{self.port}",
                                            daemon=True)
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("ResultsServer: not started; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join()
            self._httpd = self._thread = None

    def __enter__(self) -> ResultsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
