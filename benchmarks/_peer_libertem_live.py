"""LiberTEM-live on a DECTRIS stream v1 simulator: ring + COM, 2 worker processes.

Run by ``bench_live.py`` with the interpreter of the environment that has LiberTEM-live
(``.venv-bench``), in a subprocess, so that neither package's imports affect the other's
run. Arms the simulator through its REST API (LiberTEM-live's active mode), receives with
LiberTEM-live's Rust receiver, runs the UDFs on its pipelined executor, and prints one JSON
line per run: frames/s from the UDF run's start to its results, and the ring image's sum.

    python _peer_libertem_live.py API_PORT DATA_PORT NY NX RUNS MASK.npy OUT.npy

MASK.npy: the ring, rasterised by framescope (the same pixels for both).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    api_port, data_port, ny, nx, runs = (int(a) for a in sys.argv[1:6])
    mask = np.load(sys.argv[6]).astype(np.float32)
    out = sys.argv[7]
    from libertem.executor.pipelined import PipelinedExecutor
    from libertem.udf.com import CoMUDF
    from libertem.udf.masks import ApplyMasksUDF
    from libertem_live.api import LiveContext

    executor = PipelinedExecutor(spec=PipelinedExecutor.make_spec(cpus=range(2), cudas=[]))
    with LiveContext(executor=executor) as ctx, ctx.make_connection("dectris").open(
            api_host="127.0.0.1", api_port=api_port, data_host="127.0.0.1",
            data_port=data_port) as conn:
        h, w = 256, 256
        udfs = [ApplyMasksUDF(mask_factories=[lambda: mask]),
                CoMUDF.with_params(cy=h // 2, cx=w // 2, r=40)]
        for i in range(runs + 1):  # the first: warm-up (workers, kernels)
            aq = ctx.make_acquisition(conn=conn, nav_shape=(ny, nx))
            t0 = time.perf_counter()
            res = ctx.run_udf(dataset=aq, udf=udfs)
            dt = time.perf_counter() - t0
            image = np.asarray(res[0]["intensity"].data)[..., 0]
            if i:
                print(json.dumps({"fps": ny * nx / dt, "frames": ny * nx,
                                  "ring_sum": float(image.sum())}), flush=True)
        np.save(out, image)


if __name__ == "__main__":
    main()
