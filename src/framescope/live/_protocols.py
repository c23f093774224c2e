"""Protocol names → decoder and encoder classes."""

from __future__ import annotations

from typing import Any

from framescope.live._native import NativeDecoder, NativeEncoder
from framescope.live._stream1 import Stream1Decoder, Stream1Encoder
from framescope.live._stream2 import Stream2Decoder, Stream2Encoder

__all__ = ["PROTOCOLS", "make_decoder", "make_encoder"]

PROTOCOLS: dict[str, tuple[type, type]] = {
    "dectris-stream2": (Stream2Decoder, Stream2Encoder),
    "dectris-stream1": (Stream1Decoder, Stream1Encoder),
    "native": (NativeDecoder, NativeEncoder),
}


def _classes(protocol: str) -> tuple[type, type]:
    try:
        return PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of "
                         f"{', '.join(PROTOCOLS)}") from None


def make_decoder(protocol: str, *, channel: str | None = None,
                 max_frame_bytes: int = 256 * 2**20, verify_hash: bool = False) -> Any:
    """A decoder for ``protocol`` (``channel`` picks a stream2 threshold channel,
    ``verify_hash`` checks stream v1 blobs against their MD5)."""
    cls = _classes(protocol)[0]
    if verify_hash and cls is not Stream1Decoder:
        raise ValueError(f"verify_hash= applies to dectris-stream1 only, not {protocol}")
    if cls is Stream2Decoder:
        return cls(channel=channel, max_frame_bytes=max_frame_bytes)
    if channel is not None:
        raise ValueError(f"channel= applies to dectris-stream2 only, not {protocol}")
    if cls is Stream1Decoder:
        return cls(max_frame_bytes=max_frame_bytes, verify_hash=verify_hash)
    return cls(max_frame_bytes=max_frame_bytes)


def make_encoder(protocol: str, compression: str = "none", **options: Any) -> Any:
    """An encoder (sender side) for ``protocol``; ``options`` go to its class (e.g.
    ``md5``, ``header_detail``, ``appendix`` of dectris-stream1)."""
    return _classes(protocol)[1](compression, **options)
