"""The documentation site builds with warnings as errors, and its API pages are filled in."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"sphinx-build failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out / "html"


def test_every_page_is_built(site: Path) -> None:
    pages = {p.stem for p in DOCS.glob("*.md")}
    built = {p.stem for p in site.glob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"


def test_api_reference_documents_the_public_api(site: Path) -> None:
    import framescope
    import framescope.masks
    import framescope.udf

    html = (site / "api.html").read_text()
    documented = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', html))
    expected = {f"framescope.{n}" for n in framescope.__all__
                if inspect.isfunction(getattr(framescope, n))}
    expected |= {f"framescope.masks.{n}" for n in framescope.masks.__all__
                 if n[0].islower() or n in {"MaskStack", "Disk", "Ring"}}
    expected |= {f"framescope.udf.{n}" for n in framescope.udf.__all__}
    expected |= {"framescope.accessor.FsAccessor.virtual_image",
                 "framescope.dashboard.dashboard", "framescope.live.ZMQSource",
                 "framescope.errors.FramescopeError"}
    assert framescope.__version__ in (site / "index.html").read_text()
    assert expected <= documented, f"missing from api.html: {sorted(expected - documented)}"
