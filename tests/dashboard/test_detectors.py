from __future__ import annotations

import pytest

import framescope as fs
import framescope.masks as fm
from framescope.dashboard._detectors import (
    COLORS,
    BoxDetector,
    DiskDetector,
    PolygonDetector,
    RingDetector,
    boxes_table,
    centres_table,
    detector_from_spec,
    next_color,
    outline_paths,
    polygons_table,
    read_boxes,
    read_centres,
    read_polygons,
    unique_name,
)


@pytest.mark.parametrize("spec", [
    fm.disk(30, 40.5, 12),
    fm.ring(64, 64, 20, 45.25),
    fm.box(3, 4, 20, 30.5),
    fm.polygon([(1, 1), (1, 20), (15, 8)]),
])
def test_spec_round_trip_and_code(spec):
    det = detector_from_spec("m", spec, "#123456")
    assert det.spec() == spec
    assert det.spec().key == spec.key
    assert eval(det.code(), {"fs": fs}) == spec  # the code shown to users rebuilds the spec


def test_parameters_change_the_spec():
    det = RingDetector(name="adf", cy=64, cx=64, r_in=20, r_out=40)
    det.r_out = 50
    assert det.spec() == fm.ring(64, 64, 20, 50)
    det.translate(-2, 3)
    assert det.spec() == fm.ring(62, 67, 20, 50)
    box = BoxDetector(name="b", y0=1, x0=2, y1=3, x1=4)
    box.translate(1, 1)
    assert box.spec() == fm.box(2, 3, 4, 5)


def test_point_and_array_masks_are_refused():
    with pytest.raises(TypeError, match="point"):
        detector_from_spec("p", fm.point(1, 1))


def test_tables_hold_what_the_draw_tools_show():
    dets = [DiskDetector(name="bf", cy=10, cx=20, r=5, color="#e41a1c"),
            RingDetector(name="adf", cy=11, cx=21, r_in=6, r_out=9, color="#377eb8"),
            BoxDetector(name="b", y0=1, x0=2, y1=3, x1=4, color="#4daf4a"),
            PolygonDetector(name="p", vertices=[(0, 0), (0, 5), (5, 0)])]
    assert centres_table(dets) == {"x": [20, 21], "y": [10, 11], "name": ["bf", "adf"],
                                   "color": ["#e41a1c", "#377eb8"]}
    assert centres_table(dets, only="adf")["name"] == ["adf"]
    assert boxes_table(dets) == {"x0": [2], "y0": [1], "x1": [4], "y1": [3], "name": ["b"],
                                 "color": ["#4daf4a"]}
    assert polygons_table(dets)[0]["x"] == [0, 5, 0]
    assert polygons_table(dets)[0]["y"] == [0, 0, 5]
    paths = outline_paths(dets)
    assert [p["name"] for p in paths] == ["bf", "adf", "adf"]  # a ring has two circles
    import numpy as np

    r = np.hypot(paths[2]["x"] - 21, paths[2]["y"] - 11)
    np.testing.assert_allclose(r, 9)


def test_read_draw_tool_data():
    assert read_centres({"x": [20.123], "y": [10.0], "name": ["bf"]}) == {"bf": (10.0, 20.12)}
    assert read_centres({}) == {}
    rows = read_boxes({"x0": [30, 5], "y0": [20, 1], "x1": [10, 6], "y1": [2, 3],
                       "name": ["b", 0]})
    # corners in any order; a row without a valid name is a newly drawn box
    assert rows == [("b", {"y0": 2, "x0": 10, "y1": 20, "x1": 30}),
                    (None, {"y0": 1, "x0": 5, "y1": 3, "x1": 6})]
    polys = read_polygons({"xs": [[0, 5, 0, 0], [1, 2]], "ys": [[0, 0, 5, 0], [1, 2]],
                           "name": ["p", "q"]})
    assert polys == [("p", [(0, 0), (0, 5), (5, 0)])]  # closing vertex dropped; 2-vertex skipped
    # PolyDraw's trailing copy of the vertex under the pointer: a new polygon is still being
    # drawn (not a detector yet); a named one just loses the copy
    drawing = {"xs": [[0, 5, 5], [0, 5, 9, 9]], "ys": [[0, 0, 0], [0, 0, 7, 7]],
               "name": [0, "q"]}
    assert read_polygons(drawing) == [("q", [(0, 0), (0, 5), (7, 9)])]


def test_names_and_colours():
    assert unique_name("box", ["box1", "box3"]) == "box2"
    assert next_color([]) == COLORS[0]
    assert next_color(COLORS[:2]) == COLORS[2]
    assert next_color(COLORS) in COLORS
