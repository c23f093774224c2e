from __future__ import annotations

import inspect
import subprocess
import sys


def test_import_framescope_does_not_import_panel():
    code = ("import sys, framescope; "
            "assert not {'panel', 'holoviews', 'bokeh'} & set(sys.modules), "
            "sorted({'panel', 'holoviews', 'bokeh'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fs_dashboard_is_callable_however_it_was_imported():
    import framescope as fs
    import framescope.dashboard  # rebinds fs.dashboard to the subpackage
    from framescope.dashboard import dashboard

    assert callable(fs.dashboard)
    assert fs.dashboard is framescope.dashboard
    assert inspect.signature(fs.dashboard) == inspect.signature(dashboard)
