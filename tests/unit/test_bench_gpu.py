"""The full-size GPU benchmark script, run in its --smoke mode (the same code at tiny sizes on the CPU), so the
script is known to work before any device time is spent on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "vdt_bench", "bench_gpu.py")
COMFYUI = os.environ.get("VDT_COMFYUI_DIR", os.path.join(ROOT, ".vdt", "ComfyUI"))


@pytest.mark.skipif(not os.path.isfile(os.path.join(COMFYUI, "main.py")), reason="ComfyUI tree not set up")
def test_smoke_runs_every_row_and_writes_the_table(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--smoke", "--threads", "1", "--out", str(tmp_path),
                        "--comfyui", COMFYUI], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    assert summary["smoke"] is True and summary["device"].startswith("cpu")
    from vdt_bench import bench_gpu
    names = [r["name"] for r in bench_gpu.rows(smoke=True)]
    assert list(summary["results"]) == names
    for name, res in summary["results"].items():
        assert f"| {name} |" in md
        if name.startswith("pp_") and res["status"] == "skipped":
            continue        # only where the tree has no Point Prompting benchmark or the option is not offered
        assert res["status"] == "ok", (name, res)
        assert res["seconds"] > 0 and res["peak_gb"] > 0, (name, res)
        if "finite" in res:
            assert res["finite"], name
    res = summary["results"]
    assert res["wan_floor_bf16"]["blocks"] == bench_gpu.WAN_SMOKE["layer"] + 1
    assert res["wan_features_bf16"]["shape"][0] == bench_gpu.WAN_SMOKE["frames"]
    assert res["wan_features_bf16_compile"]["compiled_graphs"] > 0     # the compiled module really ran
    assert "ratio_to_floor" in res["wan_features_bf16"]
    assert res["propagation_480p"]["fps"] > 0


def test_goal_verdicts():
    from vdt_bench import bench_gpu
    results = {
        "wan_floor_bf16": {"status": "ok", "seconds": 2.0},
        "wan_features_bf16": {"status": "ok", "seconds": 3.2},          # 1.6x the floor: misses 1.5x
        "heft_256_speculative": {"status": "ok", "seconds": 5.0},       # no goal at 256 points
        "heft_1024_speculative": {"status": "ok", "seconds": 0.9},
        "heft_1024_sequential": {"status": "ok", "seconds": 1.1},
        "propagation_480p": {"status": "ok", "fps": 60.0, "peak_gb": 2.5},   # fast enough, too much memory
        "pp_4_bf16": {"status": "ok", "s_per_point": 12.0},
        "pp_1_bf16": {"status": "skipped"},
    }
    v = bench_gpu.judge(results)
    assert v == {"wan_features_bf16": False, "heft_1024_speculative": True, "heft_1024_sequential": False,
                 "propagation_480p": False, "pp_4_bf16": True}
    assert abs(results["wan_features_bf16"]["ratio_to_floor"] - 1.6) < 1e-9
