"""``framescope serve``: argument checks and defaults (serving itself: tests/dashboard)."""

from __future__ import annotations

import pytest

from framescope.cli import build_parser, main


@pytest.mark.parametrize("argv", [["serve"], ["serve", "data.raw", "--demo"],
                                  ["serve", "--demo", "--live", "tcp://127.0.0.1:9"]])
def test_serve_needs_one_of_path_demo_or_live(argv, capsys):
    pytest.importorskip("panel")
    assert main(argv) == 2
    assert "PATH, --demo or --live ENDPOINT" in capsys.readouterr().err


def test_serve_live_refuses_an_unknown_protocol(capsys):
    pytest.importorskip("panel")
    pytest.importorskip("zmq")
    assert main(["serve", "--live", "tcp://127.0.0.1:9", "--protocol", "dectris9"]) == 2
    assert "dectris-stream2" in capsys.readouterr().err


def test_serve_parser_defaults_to_localhost():
    args = build_parser().parse_args(["serve", "--demo"])
    assert (args.address, args.port, args.scheduler, args.persist) == ("127.0.0.1", 5006,
                                                                       "inline", False)
