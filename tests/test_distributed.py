"""torchrun: two CPU processes on gloo share the shadows; the result equals one process."""

import json
import os
import subprocess
import sys

from conftest import REPO, tiny_opts

# One thread per process and one model per pack, so that both runs do the same arithmetic.
_SAME_ARITHMETIC = {"NUM_THREADS": "1", "NUM_WORKERS": "1",
                    "SHADOW.TRAIN.MODELS_PER_PACK": "1", "SHADOW.NUM_MODELS": "3"}


def _run(prefix, out, data_root):
    opts = tiny_opts(data_root, out, **_SAME_ARITHMETIC)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([*prefix, os.path.join(REPO, "run_attack.py"), *opts], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(out / "metrics.json") as f:
        return json.load(f), res.stdout


def test_torchrun_two_processes_equals_one(data_root, tmp_path):
    single, _ = _run([sys.executable], tmp_path / "single", data_root)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2"]
    multi, stdout = _run(torchrun, tmp_path / "multi", data_root)
    assert "[rank 1]" in stdout  # rank 1 really trained shadows
    assert multi["shadows"] == single["shadows"]
    assert multi["victim"] == single["victim"]
    assert multi["overall"] == single["overall"]
    assert multi["per_class"] == single["per_class"]
