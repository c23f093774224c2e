"""Dashboard latency: from a mask edit to the complete virtual image, and updates while dragging.

A 64x64 scan of 256x256 uint16 frames (512 MiB, simulated once under --data-dir) is held in
memory: this process's (the default executor) and a 2-process LocalCluster's, in turn. Prints:

- server side (in this process, no browser): edit event -> first partial and complete image
  in the dashboard's results, the display-loop flush that updates the Bokeh models, and the
  complete images per second while a drag is simulated at 60 pan events/s;
- browser (``framescope serve PATH --persist`` driven by Playwright in Debian's chromium):
  typed radius + Enter -> the complete image in the page's Bokeh document; the same radii
  again, whose images are cached, give the UI's own round trip (browser, websocket, panel)
  as the floor; and image updates per second in the page while the centre is dragged with
  the mouse.

    python benchmarks/bench_dashboard.py [--no-browser]

Not a test: nothing is asserted. The machine's load shows in the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import framescope as fs
import framescope.masks as fm
from framescope.datasets import synthetic

SCAN, DET = (64, 64), (256, 256)
RADII = [20.0 + 1.5 * i for i in range(12)]


def data_path(data_dir: str) -> Path:
    path = Path(data_dir) / "64x64_256x256" / "data.raw"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        print(f"simulating {path} …", flush=True)
        fs.io.save(synthetic(scan=SCAN, det=DET), path, "raw")
    return path


def reference(frames: np.ndarray, spec) -> np.ndarray:
    mask = spec.rasterize(DET) > 0
    return frames[:, :, mask].sum(axis=-1, dtype=np.int64).astype(np.float64)


def ms(values: list[float]) -> str:
    v = [1e3 * x for x in values]
    return f"median {statistics.median(v):6.1f} ms  (min {min(v):6.1f}, max {max(v):6.1f})"


def wait_image(state, name: str, key: str, done: float = 1.0, timeout: float = 60) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        vi = state.image(name)
        if vi is not None and vi.spec_key == key and vi.done >= done:
            return time.perf_counter()
        time.sleep(0.0005)
    raise TimeoutError(f"no image for {key}")


def server_side(path: Path, partition_mib: float, executor: str) -> None:
    """``executor``: "inline" (frames in this process's memory, the default) or "local"
    (in the memory of a 2-process LocalCluster)."""
    from framescope.dashboard import Dashboard
    from framescope.engine._cache import results

    results.clear()  # both executors see the same data: no image of the other's run
    if executor == "local":
        from distributed import wait

        from framescope.dashboard._serve import local_client

        client = local_client(2)
        arr = fs.open(path, partition_mib=partition_mib).fs.persist(client)
        wait(arr.data)
    else:
        client = "inline"
        arr = fs.open(path, partition_mib=partition_mib).fs.persist(client)
    n_parts = len(arr.data.chunks[0]) * len(arr.data.chunks[1])
    dash = Dashboard(arr, client=client)
    dash.__panel__().get_root()  # Bokeh models, as in a session
    state = dash.state
    state.jobs.wait(timeout=300)
    dash.flush()
    det = state.detector("bf")
    firsts, completes, flushes = [], [], []
    for r in RADII:
        key = fm.disk(det.cy, det.cx, r).key
        t0 = time.perf_counter()
        det.r = r  # the edit event (what a typed radius or a drag does)
        t1 = wait_image(state, "bf", key, done=0.0)
        t2 = wait_image(state, "bf", key)
        t3 = time.perf_counter()
        dash.flush()
        flushes.append(time.perf_counter() - t3)
        firsts.append(t1 - t0)
        completes.append(t2 - t0)
    where = "this process's" if executor == "inline" else "2 workers'"
    print(f"server, {executor}: {arr.nbytes / 2**20:.0f} MiB in {where} memory, {n_parts} "
          f"partitions, 1 disk mask:")
    print(f"  edit -> first partial image   {ms(firsts)}")
    print(f"  edit -> complete image        {ms(completes)}")
    print(f"  display flush (Bokeh models)  {ms(flushes)}")

    view = dash.detector_view
    view._schedule = lambda callback, delay: None  # no reconcile timer outside a server
    seen: dict[str, float] = {}
    put = state.results.put

    def record(key, value):  # completion time of every image shown while dragging
        if key == "vi:bf" and value.done >= 1:
            seen.setdefault(value.spec_key, time.perf_counter())
        put(key, value)

    state.results.put = record
    cy, cx = det.cy, det.cx
    view._on_pan(cx, cy, view._stroke)  # press on the centre
    t0, n_events, sent = time.perf_counter(), 0, 0
    next_flush = t0
    while time.perf_counter() - t0 < 3.0:  # 60 pan events/s, a display tick every 100 ms
        n_events += 1
        view._on_pan(cx + 0.25 * n_events, cy, view._stroke)
        if time.perf_counter() >= next_flush:
            sent += dash.flush()
            next_flush += 0.1
        time.sleep(1 / 60)
    duration = time.perf_counter() - t0
    state.jobs.wait(timeout=60)
    print(f"  drag, {n_events / duration:.0f} pan events/s for {duration:.1f} s: "
          f"{len(seen) / duration:.1f} complete images/s, {sent / duration:.1f} display "
          f"updates/s")
    dash.close()
    if executor == "local":
        client.close()


JS_SUM = """([title, expected]) => {
  for (const m of Bokeh.documents[0].all_models) {
    if (m.type !== "Figure" || m.title == null || m.title.text !== title) continue;
    for (const r of m.renderers) {
      if (r.glyph != null && r.glyph.type === "Image") {
        let s = 0;
        for (const v of r.data_source.data.image[0]) s += v;
        return Math.abs(s - expected) <= 1e-4 * Math.abs(expected);
      }
    }
  }
  return false;
}"""

JS_COUNT = """(title) => {
  let source = null;
  for (const m of Bokeh.documents[0].all_models) {
    if (m.type !== "Figure" || m.title == null || !m.title.text.startsWith(title)) continue;
    for (const r of m.renderers) {
      if (r.glyph != null && r.glyph.type === "Image") source = r.data_source;
    }
  }
  window._fsUpdates = 0;
  let last = source.data.image[0];
  const tick = () => {
    const im = source.data.image[0];
    if (im !== last) { window._fsUpdates += 1; last = im; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def typed_radii(page, field, frames: np.ndarray) -> list[float]:
    """Seconds from typing each of RADII (+ Enter) to its complete image in the page."""
    out = []
    for r in RADII:
        expected = float(reference(frames, fm.disk(128, 128, r)).sum())
        field.fill(f"{r}")
        t0 = time.perf_counter()
        field.press("Enter")
        page.wait_for_function(JS_SUM, arg=["scan: bf", expected], polling="raf",
                               timeout=60_000)
        out.append(time.perf_counter() - t0)
        time.sleep(0.3)
    return out


def browser(path: Path, frames: np.ndarray) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from playwright.sync_api import sync_playwright

    from dashboard._browser import (
        CHROMIUM,
        CHROMIUM_ARGS,
        JS_TO_PAGE,
        JS_TOOL_DATA,
        launch_server,
        server_url,
        stop_server,
    )

    proc = launch_server([str(path), "--persist", "--port", "0"])
    try:
        url = server_url(proc, timeout=600)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url)
            page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0",
                                   timeout=120_000)
            first = float(reference(frames, fm.disk(128, 128, 32)).sum())
            page.wait_for_function(JS_SUM, arg=["bf", first], timeout=300_000)
            time.sleep(2)
            field = page.locator(".bk-input-group", has_text="r (px)").locator("input").first
            lat = typed_radii(page, field, frames)
            floor = typed_radii(page, field, frames)  # cached images: the UI's round trip
            print("browser (chromium, software rendering), same data:")
            print(f"  typed radius -> complete image in the page  {ms(lat)}")
            print(f"  same, image computed before (UI round trip) {ms(floor)}")

            page.mouse.click(5, 5)  # leave the radius field
            time.sleep(1)
            page.evaluate(JS_COUNT, "scan: bf")
            x0, y0 = page.evaluate(JS_TO_PAGE, ["detector", 128, 128])
            x1, _ = page.evaluate(JS_TO_PAGE, ["detector", 168, 128])
            page.mouse.move(x0, y0)
            page.mouse.down()
            # past Bokeh's 5 px pan threshold at once, or a slow start becomes a "press"
            page.mouse.move(x0 + 8, y0)
            t0 = time.perf_counter()
            steps = 0
            while time.perf_counter() - t0 < 4.0:  # ~60 mouse moves/s for 4 s
                steps += 1
                page.mouse.move(x0 + 8 + (x1 - x0 - 8) * min(steps / 240, 1), y0)
                time.sleep(1 / 60)
            page.mouse.up()
            duration = time.perf_counter() - t0
            time.sleep(0.5)
            updates = page.evaluate("window._fsUpdates")
            moved = page.evaluate(JS_TOOL_DATA, ["detector", "PointDrawTool"])
            print(f"  (the centre handle was dragged from x=128 to x={moved['x'][0]:.1f} px)")
            print(f"  mouse drag of the centre, {steps / duration:.0f} moves/s for "
                  f"{duration:.1f} s: {updates / duration:.1f} image updates/s in the page")
            b.close()
    finally:
        stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--partition-mib", type=float, default=32,
                    help="partition size of the server-side part (the served one uses "
                         "the default 128 MiB)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-server-side", action="store_true")
    ap.add_argument("--executors", default="inline,local",
                    help="server side: where jobs run, compared in one run (inline, local)")
    args = ap.parse_args()
    path = data_path(args.data_dir)
    if not args.no_server_side:
        for executor in args.executors.split(","):
            server_side(path, args.partition_mib, executor)
    if not args.no_browser:
        frames = np.memmap(path, dtype=np.uint16, mode="r", shape=(*SCAN, *DET))
        browser(path, frames)


if __name__ == "__main__":
    main()
