"""Direct Bokeh updates write what holoviews itself would for the same image."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("holoviews")


@pytest.fixture(autouse=True)
def _extensions():
    from framescope.dashboard._app import load_extensions

    load_extensions()


def _render(element):
    import holoviews as hv

    return hv.render(element)


@pytest.mark.parametrize(("shape", "factor"), [((3, 4), 1), ((5, 7), 3), ((1, 1), 1)])
def test_columns_match_holoviews(shape, factor):
    import holoviews as hv

    from framescope.dashboard._bokeh import image_columns
    from framescope.dashboard._images import block_coords

    h, w = shape
    z = np.random.default_rng(1).random((-(-h // factor), -(-w // factor))).astype(np.float32)
    x, y = block_coords(w, factor), block_coords(h, factor)
    plots = []
    fig = _render(hv.Image((x, y, z), kdims=["x", "y"]).opts(
        hooks=[lambda plot, element: plots.append(plot)]))
    assert fig is not None
    expected = plots[0].handles["source"].data
    got = image_columns(x, y, z)
    for key in ("x", "y", "dw", "dh"):
        if len(x) > 1 and len(y) > 1:  # holoviews' bounds of a 1-pixel image are its own
            assert got[key][0] == pytest.approx(float(expected[key][0])), key
    np.testing.assert_array_equal(got["image"][0], expected["image"][0])


def test_direct_image_updates_every_shown_plot():
    import holoviews as hv
    import panel as pn
    from bokeh.models import GlyphRenderer, Image, Segment

    from framescope.dashboard._bokeh import DirectImage

    direct = DirectImage(outlines=True)
    z0 = np.zeros((4, 6), np.float32)
    element = hv.Image((np.arange(6), np.arange(4), z0)).opts(
        hooks=[direct.hook], clim=(0, 1), title="before")
    assert not direct.image({})  # nothing shown yet: the caller sends it through a stream
    roots = [pn.pane.HoloViews(element).get_root() for _ in range(2)]  # two documents
    z1 = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert direct.image({"x": np.arange(6), "y": np.arange(4), "z": z1, "clim": (2.0, 20.0),
                         "title": "after"})
    direct.outlines({"x0": [0.0], "y0": [0.0], "x1": [5.0], "y1": [3.0], "name": ["d"],
                     "color": ["red"], "lw": [2.0]},
                    {"x": [1.0], "y": [1.0], "name": ["d"], "color": ["red"]})
    for root in roots:
        renderers = list(root.select({"type": GlyphRenderer}))
        image = next(r for r in renderers if isinstance(r.glyph, Image))
        np.testing.assert_array_equal(image.data_source.data["image"][0], z1)
        assert (image.glyph.color_mapper.low, image.glyph.color_mapper.high) == (2.0, 20.0)
        seg = next(r for r in renderers if isinstance(r.glyph, Segment))
        assert seg.data_source.data["x1"] == [5.0]
    titles = {f.title.text for root in roots for f in root.select({"type": _figure()})}
    assert titles == {"after"}


def _figure():
    from bokeh.plotting import figure

    return figure
