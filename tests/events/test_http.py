from __future__ import annotations

import io
import json
import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

import numpy as np
import pytest
from pydantic import BaseModel, Field

from framescope.events._http import ResultsServer
from framescope.events._params import Parameters
from framescope.events._resultview import MAX_JSON_ELEMENTS

TOKEN = "s3cret-token"

MAP = (np.arange(60, dtype=np.float32).reshape(6, 10) * 1.5 - 7).astype(np.float32)
MAP[2, 3] = np.nan
CUBE = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 12
STATE = {
    "map": MAP,
    "cube": CUBE,
    "mask": CUBE % 3 == 0,
    "count": np.int64(42),
    "mean": 0.25,
    "name": "scan 7",
    "list": [1, 2.5, "x"],
    "group": {"sub": np.array([[1, 2], [3, 4]], dtype=np.uint16),
              "deeper": {"v": np.float64(-0.5)}, "nan": float("nan")},
    "big": np.zeros(MAX_JSON_ELEMENTS + 1, dtype=np.uint8),
    "complex": np.array([1 + 2j]),
}


class Knobs(BaseModel):
    threshold: float = Field(gt=0)
    binning: int = 1


def fetch(url: str, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str) -> tuple[int, object]:
    status, _, body = fetch(url)
    return status, json.loads(body)


def npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


@pytest.fixture(scope="module")
def server():
    params = Parameters({"threshold": 1.0}, model=Knobs)
    with ResultsServer(lambda: STATE, params, lambda: {"events": np.int64(12), "ok": True},
                       token=TOKEN) as srv:
        yield srv


@pytest.fixture
def writable():
    params = Parameters({"threshold": 1.0}, model=Knobs)
    with ResultsServer(dict, params, token=TOKEN) as srv:
        yield srv, params


def post(srv: ResultsServer, changes: object, token: str | None = TOKEN, raw: bytes = b""):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return fetch(srv.url + "/parameters", "POST", raw or json.dumps(changes).encode(), headers)


def test_binds_loopback_on_a_free_port(server):
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0


def test_index_lists_type_shape_dtype(server):
    status, index = get_json(server.url + "/results")
    assert status == 200
    assert index["map"] == {"type": "array", "shape": [6, 10], "dtype": "float32"}
    assert index["mask"] == {"type": "array", "shape": [2, 3, 4], "dtype": "bool"}
    assert index["count"] == {"type": "scalar", "shape": [], "dtype": "int64"}
    assert index["name"] == {"type": "str"}
    assert index["list"] == {"type": "list", "shape": [3]}
    assert index["group"]["type"] == "dict"
    assert index["group"]["keys"]["sub"] == {"type": "array", "shape": [2, 2],
                                            "dtype": "uint16"}
    assert index["group"]["keys"]["deeper"]["keys"]["v"]["dtype"] == "float64"
    assert set(index) == set(STATE)


@pytest.mark.parametrize("key", ["map", "cube", "mask", "big"])
def test_whole_arrays_round_trip_bit_exactly(server, key):
    status, headers, body = fetch(f"{server.url}/results/{key}")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    got = npy(body)
    assert got.dtype == STATE[key].dtype
    assert got.shape == STATE[key].shape
    assert got.tobytes() == STATE[key].tobytes()  # NaN included, bit for bit


@pytest.mark.parametrize(("key", "text", "index"), [
    ("map", "1:3,:", np.s_[1:3, :]),
    ("map", "::-1,...", np.s_[::-1, ...]),
    ("map", "-1", np.s_[-1]),
    ("map", "2,3", np.s_[2, 3]),
    ("map", "-4:-1:2, 9:0:-3", np.s_[-4:-1:2, 9:0:-3]),
    ("map", "0:0", np.s_[0:0]),
    ("map", "100:200", np.s_[100:200]),
    ("cube", "...,-1", np.s_[..., -1]),
    ("cube", "1,...,::-2", np.s_[1, ..., ::-2]),
    ("cube", "...", np.s_[...]),
    ("cube", "+1,:2,3:", np.s_[1, :2, 3:]),
    ("mask", ":,::-1,1", np.s_[:, ::-1, 1]),
])
def test_slices_match_numpy(server, key, text, index):
    expected = np.asarray(STATE[key][index])
    status, _, body = fetch(f"{server.url}/results/{key}/{text.replace(' ', '%20')}")
    assert status == 200, body
    got = npy(body)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


def test_url_encoded_slice(server):
    status, _, body = fetch(f"{server.url}/results/map/{quote('1:4:2,-3:', safe='')}")
    assert status == 200
    np.testing.assert_array_equal(npy(body), MAP[1:4:2, -3:])


def test_json_form_of_arrays_and_slices(server):
    status, cube = get_json(server.url + "/results/cube?format=json")
    assert status == 200
    assert cube == CUBE.tolist()
    status, row = get_json(server.url + "/results/map/2,1:5?format=json")
    assert row == [float(MAP[2, 1]), float(MAP[2, 2]), None, float(MAP[2, 4])]  # NaN→null
    assert get_json(server.url + "/results/map/0,0?format=json") == (200, float(MAP[0, 0]))
    assert get_json(server.url + "/results/mask/0,0?format=json")[1] == \
        (CUBE[0, 0] % 3 == 0).tolist()


def test_scalars_strings_lists_and_dicts_are_json(server):
    assert get_json(server.url + "/results/count") == (200, 42)
    assert get_json(server.url + "/results/mean") == (200, 0.25)
    assert get_json(server.url + "/results/name") == (200, "scan 7")
    assert get_json(server.url + "/results/list") == (200, [1, 2.5, "x"])
    _, group = get_json(server.url + "/results/group")
    assert group == {"sub": [[1, 2], [3, 4]], "deeper": {"v": -0.5}, "nan": None}


def test_nested_keys_and_their_slices(server):
    status, _, body = fetch(server.url + "/results/group/sub")
    assert status == 200
    got = npy(body)
    assert got.dtype == np.uint16
    assert got.tolist() == [[1, 2], [3, 4]]
    status, _, body = fetch(server.url + "/results/group/sub/::-1,1")
    np.testing.assert_array_equal(npy(body), STATE["group"]["sub"][::-1, 1])
    assert get_json(server.url + "/results/group/deeper/v") == (200, -0.5)


@pytest.mark.parametrize(("path", "words"), [
    ("/results/nope", ["'nope'", "'map'", "'group'", "'big'"]),
    ("/results/group/nope", ["results/group", "'sub'", "'deeper'"]),
    ("/results/group/deeper/v/w", ["results/group/deeper/v", "'w'", "float64"]),
    ("/results/map/1/2", ["'1'"]),
    ("/nowhere", ["/results", "/parameters", "/status"]),
    ("/", ["/results"]),
    ("/parameters/other", ["/parameters/history"]),
    ("/status/x", ["/status"]),
])
def test_unknown_paths_are_404_and_say_what_exists(server, path, words):
    status, _, body = fetch(server.url + path)
    assert status == 404
    msg = json.loads(body)["error"]
    for w in words:
        assert w in msg


@pytest.mark.parametrize("text", ["1:2:3:4", "a", "eval(1)", "1;2", "...,...", "1.5",
                                  "1,,2", "::0", "__import__('os')", "[1]", "None"])
def test_bad_slice_syntax_is_400_naming_the_slice(server, text):
    status, _, body = fetch(f"{server.url}/results/map/{quote(text, safe='')}")
    assert status == 400
    msg = json.loads(body)["error"]
    assert repr(text) in msg
    assert "expected" in msg


@pytest.mark.parametrize("text", ["6", "-7", "0,10", "1,2,3", "99999999999999999999999"])
def test_slices_that_do_not_fit_are_400(server, text):
    status, _, body = fetch(f"{server.url}/results/map/{text}")
    assert status == 400
    msg = json.loads(body)["error"]
    assert "(6, 10)" in msg
    assert repr(text) in msg


def test_a_segment_below_a_non_array_is_404(server):
    status, _, body = fetch(server.url + "/results/list/0")
    assert status == 404
    assert "arrays only" in json.loads(body)["error"]


def test_big_arrays_have_no_json_form_but_slices_do(server):
    status, _, body = fetch(server.url + "/results/big?format=json")
    assert status == 413
    assert str(MAX_JSON_ELEMENTS + 1) in json.loads(body)["error"]
    status, part = get_json(server.url + "/results/big/:5?format=json")
    assert (status, part) == (200, [0] * 5)


def test_format_errors(server):
    assert fetch(server.url + "/results/map?format=csv")[0] == 400
    assert fetch(server.url + "/results/name?format=npy")[0] == 400
    assert fetch(server.url + "/results/complex?format=json")[0] == 406
    status, _, body = fetch(server.url + "/results/complex")
    assert status == 200
    assert npy(body).tolist() == [1 + 2j]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/results", "GET"), ("PUT", "/parameters", "GET, POST"),
    ("DELETE", "/status", "GET"), ("PATCH", "/results/map", "GET"),
])
def test_other_methods_are_405(server, method, path, allow):
    status, headers, _ = fetch(server.url + path, method, b"{}" if method != "DELETE" else None)
    assert status == 405
    assert headers["Allow"] == allow


def test_head_is_405_without_a_body(server):
    status, _, body = fetch(server.url + "/results", "HEAD")
    assert status == 405
    assert body == b""


def test_status(server):
    assert get_json(server.url + "/status") == (200, {"events": 12, "ok": True})


def test_parameters_read(server):
    assert get_json(server.url + "/parameters") == (
        200, {"version": 0, "values": {"threshold": 1.0, "binning": 1}})
    status, hist = get_json(server.url + "/parameters/history")
    assert status == 200
    assert [h["version"] for h in hist] == [0]


def test_parameter_update_over_http(writable):
    srv, params = writable
    status, _, body = post(srv, {"threshold": 2.5})
    assert (status, json.loads(body)) == (200, {"version": 1})
    assert params.get() == {"threshold": 2.5, "binning": 1}
    assert get_json(srv.url + "/parameters") == (
        200, {"version": 1, "values": {"threshold": 2.5, "binning": 1}})
    params.update(binning=2)
    status, hist = get_json(srv.url + "/parameters/history")
    assert [(h["version"], h["source"]) for h in hist] == [
        (0, "python"), (1, "http"), (2, "python")]
    assert hist[1]["values"] == {"threshold": 2.5, "binning": 1}


@pytest.mark.parametrize("token", [None, "wrong", "s3cret-toke", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_401(writable, token):
    srv, params = writable
    status, headers, body = post(srv, {"threshold": 9.0}, token=token)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in json.loads(body)["error"]
    assert params.version == 0


def test_other_auth_scheme_is_401(writable):
    srv, params = writable
    status, _, _ = fetch(srv.url + "/parameters", "POST", b'{"threshold": 3}',
                         {"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    assert params.version == 0


def test_read_only_without_token_is_403():
    params = Parameters({"a": 1})
    with ResultsServer(dict, params) as srv:
        status, _, body = post(srv, {"a": 2})
        assert status == 403
        assert "read-only server" in json.loads(body)["error"]
        status, _, _ = post(srv, {"a": 2}, token=None)
        assert status == 403
    assert params.version == 0


@pytest.mark.parametrize(("changes", "raw", "words"), [
    ({"threshold": -1}, b"", ["'threshold'", "greater than 0", "found -1"]),
    ({"binning": "many"}, b"", ["'binning'", "found 'many'"]),
    (None, b"{not json", ["expected JSON"]),
    (None, b"[1, 2]", ["JSON object", "list"]),
    (None, b'{"threshold": NaN}', ["finite"]),
])
def test_invalid_updates_are_400_and_change_nothing(writable, changes, raw, words):
    srv, params = writable
    status, _, body = post(srv, changes, raw=raw)
    assert status == 400
    msg = json.loads(body)["error"]
    for w in words:
        assert w in msg
    assert params.version == 0


def test_no_parameters_no_status_are_404():
    with ResultsServer(dict) as srv:
        assert fetch(srv.url + "/parameters")[0] == 404
        assert fetch(srv.url + "/status")[0] == 404
        assert get_json(srv.url + "/results") == (200, {})


def test_a_failing_publisher_is_500_naming_the_error(caplog):
    def broken():
        raise RuntimeError("reducer not ready")

    with ResultsServer(broken) as srv:
        status, _, body = fetch(srv.url + "/results")
    assert status == 500
    assert "reducer not ready" in json.loads(body)["error"]


def test_served_arrays_are_consistent_snapshots_while_values_change():
    """The publisher swaps in a new array per version; every answer is one version."""
    shape = (64, 64)
    state = {"map": np.zeros(shape), "version": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def publish():
        with lock:
            return dict(state)

    def reducer():
        v = 0
        while not stop.is_set():
            v += 1
            new = np.full(shape, float(v))
            with lock:
                state["map"], state["version"] = new, v

    problems: list[str] = []

    def client(url: str) -> None:
        last = -1.0
        for _ in range(25):
            got = npy(fetch(url + "/results/map/::-1,8:")[2])
            first = got.flat[0]
            if not (got == first).all():
                problems.append(f"mixed versions in one answer: {np.unique(got)[:5]}")
            if first < last:
                problems.append(f"went back from version {last} to {first}")
            last = first

    with ResultsServer(publish) as srv:
        writer = threading.Thread(target=reducer)
        writer.start()
        clients = [threading.Thread(target=client, args=(srv.url,)) for _ in range(3)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        stop.set()
        writer.join()
    assert problems == []
    assert state["version"] > 0


def test_lifecycle():
    srv = ResultsServer(dict)
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.url
    assert srv.start() is srv
    url = srv.url
    assert srv.start().url == url  # idempotent
    assert fetch(url + "/results")[0] == 200
    srv.stop()
    srv.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/results", timeout=5)


def test_empty_token_is_refused():
    with pytest.raises(ValueError, match="token"):
        ResultsServer(dict, token="")


def test_token_is_checked_before_the_body_is_read(writable):
    srv, _ = writable
    status, _, _ = post(srv, None, token="wrong", raw=b"{not json")
    assert status == 401
    status, _, _ = post(srv, None, token=None, raw=b"[1]")
    assert status == 401


def raw_request(srv: ResultsServer, head: str) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_body_without_length_or_too_long(writable):
    srv, params = writable
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    status, err = raw_request(srv, f"POST /parameters HTTP/1.0\r\n{auth}\r\n")
    assert status == 411
    assert "Content-Length" in err["error"]
    status, err = raw_request(
        srv, f"POST /parameters HTTP/1.0\r\n{auth}Content-Length: 99999999\r\n\r\n")
    assert status == 413
    assert "99999999" in err["error"]
    status, err = raw_request(srv, f"POST /parameters HTTP/1.0\r\n{auth}Content-Length: x\r\n\r\n")
    assert status == 400
    assert params.version == 0


def test_published_is_called_once_per_request():
    calls = []

    def published():
        calls.append(1)
        return {"g": {"a": np.arange(3)}}

    with ResultsServer(published) as srv:
        assert fetch(srv.url + "/results/g/a/1:")[0] == 200
        assert len(calls) == 1
        assert fetch(srv.url + "/results")[0] == 200
        assert len(calls) == 2
        assert fetch(srv.url + "/status")[0] == 404
        assert len(calls) == 2
