"""Virtual detectors: every frame times every mask, summed (the mask GEMM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from framescope.masks import MaskStack
from framescope.udf._backend import to_device, xp
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, fused_view, mask_runs, share_cores

if TYPE_CHECKING:  # _segments imports numba: prepare() imports it, not this module
    from framescope.udf._segments import Segments

__all__ = ["ApplyMasks"]

apply_masks_runs = LazyKernel("framescope.udf._fused", "apply_masks_runs")
apply_masks_segments = LazyKernel("framescope.udf._segments", "apply_masks_segments")
apply_masks_events = LazyKernel("framescope.udf._sparse", "apply_masks_events")
apply_masks_events_labels = LazyKernel("framescope.udf._sparse", "apply_masks_events_labels")
apply_masks_bits = LazyKernel("framescope.udf._bits", "apply_masks_bits")

# below this fraction of the window's pixels, gather the used pixels instead of the window
_GATHER_BELOW = 0.05
# events without values: one count each (the kernels take an empty array for that)
_ONE_EACH = np.empty(0, np.float32)
_ONE_EACH.flags.writeable = False

# up to this many masks the fused run kernel beats crop + float32 copy + GEMM: end to end
# on 256x256 uint16, 32-frame tiles, rings 40..90 ran 29.5 vs 9.6 GB/s at k = 1, 16.6 vs 7.0
# at k = 2 and 8.3 vs 6.5 at k = 8 (disks 1.1-2.3x, one stack of rings 0.9x at k = 4); at
# k = 16 BLAS's blocking wins (6.4 vs 4.8, rings 10..95 6.2 vs 3.3)
_RUNS_MAX_K = 8
# counted frames kept as bit planes: up to this many labels the AND + popcount of each
# label's plane beats a table lookup per event (1 label: 3-4x at 0.05 events/px)
_BITS_MAX_LABELS = 4


@dataclass(slots=True)
class _Plan:
    window: tuple[slice, slice]
    index: np.ndarray | None  # flat pixel indices (gather) or None (window), on the backend
    matrix: np.ndarray  # (pixels used, k) float32, on the backend
    runs: tuple[np.ndarray, ...] | None = None  # mask_runs() for the fused kernel
    segments: Segments | None = None  # single-valued masks: segment sums, any k
    # events (counted data): 1 + label per pixel (0 outside) for single-valued masks, else
    # the weights of every pixel (pixels, k) float32; numpy backend only
    pixel_slot: np.ndarray | None = None
    pixel_weights: np.ndarray | None = None
    # counted frames as bit planes: each label's plane (_bits.label_planes)
    label_bits: np.ndarray | None = None


class ApplyMasks(UDF):
    """Virtual images: ``intensity[p, k] = sum(frame_p * mask_k)`` for every scan position.

    On uint8/16/32 or float32 frames, single-valued masks (disks, rings, boxes, polygons;
    any number) are summed segment by segment over their union, exactly, straight from the
    tile (see ``framescope.udf._segments``); up to 8 weighted masks go through a fused
    kernel that reads only the pixels some mask covers (``framescope.udf._kernels``).
    Otherwise only the masks' bounding window of each frame is used (for very sparse masks
    just their pixels), converted to float32 tile by tile for one GEMM, so no float copy of
    a partition ever exists.

    On counted data (tiles of :class:`~framescope.udf.Events`) every event adds its pixel's
    label sum (single-valued masks: the same result as on the densified frames, bit for
    bit) or weights (float64), without densifying (``framescope.udf._sparse``); up to four
    labels on frames the source keeps as bit planes are counted by AND and popcount
    instead (``framescope.udf._bits``), with the same result.

    Parameters
    ----------
    masks : MaskStack or anything :meth:`MaskStack.from_any` accepts
        The virtual detectors. Masks in physical units (``ring(r_in=20, r_out=60,
        units="mrad")``) become the pixel masks they imply with the data's calibration
        (``meta.calibration``), the same way for files, arrays and streams.

    Raises
    ------
    framescope.errors.MaskError
        From :meth:`buffers`, before any frame is read: a mask in physical units on data
        without the calibration it needs.
    """

    share_state = True  # the plan depends on the masks (params) and Meta only

    def __init__(self, masks: Any, offsets: Any = None) -> None:
        self.masks = MaskStack.from_any(masks)
        # subtracted from each mask's sum: what folding corrections into the masks leaves
        self.offsets = None if offsets is None else tuple(float(v) for v in offsets)
        if self.offsets is not None and len(self.offsets) != len(self.masks):
            raise ValueError(f"offsets: expected one per mask ({len(self.masks)}), found "
                             f"{len(self.offsets)}")

    def params(self) -> dict[str, Any]:
        return {"masks": self.masks.key, "offsets": self.offsets}

    def folded(self, meta: Meta) -> ApplyMasks | None:
        """The same virtual images computed on the raw frames, for data with linear
        corrections (``meta.corrections`` without a threshold): weighted masks and a
        constant per mask instead of a corrected float copy of every tile (see
        :mod:`framescope.corrections._fold`); None when they are not linear."""
        from framescope.corrections import fold_masks

        if meta.corrections is None or meta.raw is None:
            return self
        masks = self.pixel_masks(meta)
        dense = masks.dense(meta.frame_shape)  # (pixels, k) on the corrected frames
        stack = dense.T.reshape(-1, *meta.frame_shape)
        folded = fold_masks(meta.corrections, stack, meta.raw[0])
        if folded is None:
            return None
        weights, constants = folded
        base = np.zeros(len(masks)) if self.offsets is None else np.asarray(self.offsets)
        return ApplyMasks({name: weights[i] for i, name in enumerate(masks.names)},
                          offsets=base + constants)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        if self.offsets is None:
            return results
        out = dict(results)
        out["intensity"] = (results["intensity"]
                            - np.asarray(self.offsets, np.float64)).astype(np.float32)
        return out

    def pixel_masks(self, meta: Meta) -> MaskStack:
        """The masks in detector pixels, physical ones resolved with ``meta.calibration``."""
        return self.masks.resolved(meta.calibration, meta.frame_shape)

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        self.pixel_masks(meta)  # a mask in mrad on uncalibrated data fails here, early
        return {"intensity": Buffer("nav", "float32", (len(self.masks),), ("mask",),
                                    extra_coords=(self.masks.names,))}

    def prepare(self, meta: Meta) -> _Plan:
        masks = self.pixel_masks(meta)
        dense = masks.dense(meta.frame_shape)  # (pixels, k), validated (shape, NaN)
        win = masks.bounding_box(meta.frame_shape)
        ys, xs = win.slices
        cube = dense.reshape(*meta.frame_shape, -1)[ys, xs]
        used = np.flatnonzero(np.any(cube != 0, axis=-1).ravel())
        matrix = np.ascontiguousarray(cube.reshape(-1, cube.shape[-1]))
        if used.size < _GATHER_BELOW * matrix.shape[0]:
            cols = np.arange(meta.frame_shape[1])[xs]
            rows = np.arange(meta.frame_shape[0])[ys]
            flat = (rows[:, None] * meta.frame_shape[1] + cols[None, :]).ravel()
            plan = _Plan(win.slices, flat[used], np.ascontiguousarray(matrix[used]))
        else:
            plan = _Plan(win.slices, None, matrix)
        if meta.backend != "numpy":  # GEMM on the device: no numba kernels there
            plan.matrix = to_device(plan.matrix, meta.backend)
            if plan.index is not None:
                plan.index = to_device(plan.index, meta.backend)
            return plan
        from framescope.udf._segments import mask_segments

        stack = dense.T.reshape(-1, *meta.frame_shape)
        # the GEMM plan stays for tiles the fused kernels cannot take
        plan.segments = mask_segments(stack)
        if plan.segments is not None:
            from framescope.udf._sparse import pixel_slots

            seg = plan.segments
            plan.pixel_slot = pixel_slots(seg.rows, seg.x0, seg.x1, seg.label,
                                          meta.frame_shape)
            n_labels = len(seg.label_ptr) - 1
            if 0 < n_labels <= _BITS_MAX_LABELS:
                from framescope.udf._bits import label_planes

                plan.label_bits = label_planes(plan.pixel_slot, n_labels)
        else:
            plan.pixel_weights = np.ascontiguousarray(dense, dtype=np.float32)
        if plan.segments is None and len(masks) <= _RUNS_MAX_K:
            plan.runs = mask_runs(stack)
        if plan.segments is not None or plan.runs is not None:
            share_cores()  # prepare runs in the thread that runs the tiles
        return plan

    def takes_events(self, meta: Meta) -> bool:
        return meta.backend == "numpy"

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        out = results["intensity"]
        ev = tile.events
        if ev is not None and out.flags.c_contiguous and (
                state.pixel_slot is not None or state.pixel_weights is not None):
            bits = (ev.bitmap() if state.label_bits is not None and ev.values is None
                    else None)
            if bits is not None:
                seg = state.segments
                apply_masks_bits(bits, state.label_bits, seg.label_ptr, seg.label_mask,
                                 seg.label_weight, out)
                return
            values = ev.values if ev.values is not None else _ONE_EACH
            if state.pixel_slot is not None:
                seg = state.segments
                apply_masks_events_labels(ev.offsets, ev.indices, values, state.pixel_slot,
                                          seg.label_ptr, seg.label_mask, seg.label_weight,
                                          out)
            else:
                apply_masks_events(ev.offsets, ev.indices, values, state.pixel_weights, out)
            return
        fused = state.segments is not None or state.runs is not None
        data = fused_view(tile.data) if fused else None
        if data is not None and out.flags.c_contiguous:
            if state.segments is not None:
                apply_masks_segments(data, *state.segments.args(), out)
            else:
                apply_masks_runs(data, *state.runs, out)
            return
        if state.index is not None:
            pixels = tile.flat[:, state.index].astype(np.float32)
        else:
            ys, xs = state.window
            pixels = tile.data[:, ys, xs].astype(np.float32).reshape(len(tile), -1)
        xp(pixels).matmul(pixels, state.matrix, out=out)
