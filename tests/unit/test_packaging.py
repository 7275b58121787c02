"""What the Comfy Registry and ComfyUI read from the repository: one version, classifiers, an icon that exists,
development files left out of the published archive, the web extension, and a square thumbnail that shows the
graph beside every shipped workflow."""
from __future__ import annotations

import ast
import fnmatch
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")          # Python >= 3.11 (the test environment's)
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_one_version_source():
    project = _pyproject()["project"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        if os.sep + ".vdt" + os.sep in path:
            continue
        tree = ast.parse(open(path).read())
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                assert "__version__" not in names, f"{path}: a second version (pyproject.toml has it)"


def test_registry_metadata_and_icon():
    cfg = _pyproject()
    classifiers = cfg["project"]["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    assert any(c.startswith("Environment :: GPU :: ") for c in classifiers)
    icon = cfg["tool"]["comfy"]["Icon"]
    assert icon.startswith("https://") and icon.endswith(".png")
    assert icon.startswith(cfg["project"]["urls"]["Repository"].replace("github.com", "raw.githubusercontent.com"))
    local = icon.split("/main/", 1)[1]
    from PIL import Image

    with Image.open(os.path.join(ROOT, local)) as im:
        assert im.size[0] == im.size[1] >= 256


def _ignored(rel: str, patterns: list[str]) -> bool:
    """gitignore-style match of a repository-relative path (the subset .comfyignore uses: /dir/, name, glob)."""
    parts = rel.split("/")
    for p in patterns:
        anchored, p = p.startswith("/"), p.strip("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if anchored and any(fnmatch.fnmatch(x, p) for x in prefixes):
            return True
        if not anchored and any(fnmatch.fnmatch(x, p) for x in parts):
            return True
    return False


def test_comfyignore_keeps_development_files_out_and_the_pack_in():
    lines = [l.strip() for l in open(os.path.join(ROOT, ".comfyignore")) if l.strip() and not l.startswith("#")]
    for rel in ("tests/unit/test_packaging.py", "tools/vdt_dev/build_workflows.py", ".ci/run"):
        assert _ignored(rel, lines), rel
    for rel in ("__init__.py", "nodes/common.py", "backbones/protocol.py", "kernels/checks.py",
                "web/report_text.js", "workflows/vdtrack_flow_tracking_demo.json", "pyproject.toml", "LICENSE",
                "README.md", "docs/icon.png"):
        assert not _ignored(rel, lines), rel


def test_web_extension_is_declared():
    tree = ast.parse(open(os.path.join(ROOT, "__init__.py")).read())
    web = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and any(getattr(t, "id", "") == "WEB_DIRECTORY" for t in n.targets))
    js = glob.glob(os.path.join(ROOT, web, "*.js"))
    assert js and any("registerExtension" in open(p).read() for p in js)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))),
                         ids=lambda p: os.path.basename(p))
def test_every_workflow_has_a_square_graph_thumbnail(path):
    """Square (the template browser's cards), and a screenshot of the graph: the canvas colour around the nodes,
    the node bodies lighter than it, and nothing of the app's chrome (its bright top banner) in the first rows."""
    from PIL import Image, ImageStat

    with Image.open(path[:-5] + ".jpg") as im:
        assert im.size[0] == im.size[1] >= 512
        grey = im.convert("L")
        corner = grey.getpixel((3, 3))
        assert corner < 60                                            # the dark canvas, not a page or a banner
        top = ImageStat.Stat(grey.crop((0, 0, im.size[0], 8))).mean[0]
        assert abs(top - corner) < 25
        # node bodies and links: a real share of the picture differs from the canvas colour
        hist = grey.histogram()
        near = sum(hist[max(0, corner - 6):corner + 7])
        assert near < 0.97 * im.size[0] * im.size[1]
