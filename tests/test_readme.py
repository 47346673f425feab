"""The README's Python example runs exactly as written.

The code block under "What it looks like in Python" is extracted from README.md and executed in a
folder holding a synthetic ``clip.mp4``, with resnet18's torchvision weights placed where the torch
cache expects them ($TORCH_HOME/hub/checkpoints/<the weights' file name>), as a user who downloaded
them once would have them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.clips import make_clip

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_example() -> str:
    text = README.read_text()
    section = text.split("## What it looks like in Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's Python section should hold one python code block"
    return blocks[0]


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(300)
def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv("FEATCOMP_DOWNLOAD", raising=False)
    ckpt = torch_home / "hub" / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), ckpt)

    work = tmp_path / "work"
    work.mkdir()
    make_clip(work / "clip.mp4", num_frames=60, fps=25)  # 2.4 s -> 12 frames at 5 fps
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(readme_python_example(), str(README), "exec"), namespace)

    feats, clip, x, t, item = (namespace[k] for k in ("feats", "clip", "x", "t", "item"))
    assert feats.data.shape == (12, 512) and feats.timestamps.shape == (12,)
    assert feats.config["backbone"]["weights"] == "DEFAULT"
    assert clip.num_frames == 12
    np.testing.assert_array_equal(namespace["latents"], x)  # the store holds what the clip decodes to
    np.testing.assert_allclose(t, feats.timestamps)
    assert float(item["timestamps"][-1] - item["timestamps"][0]) < 1.0
    assert (work / "model.safetensors").is_file() and (work / "feats.zarr" / "zarr.json").is_file()
