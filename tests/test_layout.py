"""The package a newcomer reads: no import circles, no module over the size limit, one command
family per CLI module. scripts/import_graph.py answers from the source alone, as a reader would."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_the_package_has_no_import_circle_and_no_oversized_module():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 circles, 0 over 400 lines" in r.stdout


def test_import_graph_finds_a_circle_it_is_shown(tmp_path):
    """The checker can fail: a package with a two-module circle is reported, with exit code 1."""
    pkg = tmp_path / "fcn_sweep"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    script = (REPO / "scripts" / "import_graph.py").read_text()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "import_graph.py").write_text(script)
    r = subprocess.run([sys.executable, str(tmp_path / "scripts" / "import_graph.py")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "import circle: fcn_sweep.a -> fcn_sweep.b -> fcn_sweep.a" in r.stdout


def test_the_layout_guide_names_every_module_and_script():
    """docs/layout.md is the map a newcomer reads: a module or script it does not name is a hole in it."""
    import fnmatch
    import re

    guide = (REPO / "docs" / "layout.md").read_text()
    words = set(re.findall(r"[\w*]+(?:\.\w+)?", guide))
    modules = {p.stem for p in (REPO / "fcn_sweep").rglob("*.py") if p.stem not in ("__init__", "__main__")}
    missing = sorted(m for m in modules if m not in words and f"{m}.py" not in words)
    scripts = [p.name for p in (REPO / "scripts").iterdir() if p.is_file()]
    missing += sorted(s for s in scripts if not any(fnmatch.fnmatch(s, w) for w in words))
    assert missing == [], f"docs/layout.md does not name {', '.join(missing)}"
