"""Test helpers shipped with framescope, so third-party readers can reuse them."""

from framescope.testing._contract import ReaderContract, file_digest

__all__ = ["ReaderContract", "file_digest"]
