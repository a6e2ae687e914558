"""Remote code in a checkpoint runs only when the caller allows it (issue 10, finding 1).

The hostile checkpoint's ``modeling_evil.py`` writes a marker file when it is imported: by default
the loader must refuse the checkpoint with a clear message before importing it. A control run with
``trust_remote_code=True`` (in a subprocess, with its own transformers module cache) shows that the
marker really is written when the code runs, so its absence means something.
"""

import json
import os
import subprocess
import sys

import pytest

from apo_core.errors import ApoError
from apo_core.policy import load_policy
from apo_core.policy.openvla import OpenVLAPolicy, RemoteCodeRequiredError, openvla_model_class

EVIL_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")


class EvilConfig:
    pass


class EvilModel:
    pass
"""


def make_evil_checkpoint(directory, marker, model_type="evil_vla", apo_meta=False):
    directory.mkdir(parents=True)
    (directory / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = {"model_type": model_type, "auto_map": {"AutoConfig": "modeling_evil.EvilConfig",
                                                     "AutoModelForVision2Seq": "modeling_evil.EvilModel"}}
    (directory / "config.json").write_text(json.dumps(config))
    stats = {"evil": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
    (directory / "dataset_statistics.json").write_text(json.dumps(stats))
    if apo_meta:
        (directory / "apo_policy.json").write_text(json.dumps({"kind": "openvla", "version": ""}))
    return directory


@pytest.mark.parametrize("model_type,apo_meta", [("evil_vla", False), ("openvla", False), ("evil_vla", True)])
def test_default_load_refuses_remote_code_without_running_it(tmp_path, model_type, apo_meta):
    marker = tmp_path / "marker"
    ckpt = make_evil_checkpoint(tmp_path / "ckpt", marker, model_type, apo_meta)
    with pytest.raises(RemoteCodeRequiredError, match="needs remote code") as err:
        load_policy(ckpt)
    assert isinstance(err.value, ApoError)
    assert "modeling_evil.py" in str(err.value) and "trust_remote_code" in str(err.value)
    assert str(ckpt) in str(err.value)
    with pytest.raises(RemoteCodeRequiredError):
        OpenVLAPolicy.load(ckpt, device="cpu")
    with pytest.raises(RemoteCodeRequiredError):
        openvla_model_class(ckpt)
    assert not marker.exists()


def _tiny_llava_checkpoint(directory):
    """A checkpoint of an architecture transformers implements itself (tiny, random, built here)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from apo_core.policy.text_tokenizer import build_text_tokenizer

    tok = build_text_tokenizer(320, 256)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=16)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"))
    LlavaForConditionalGeneration(cfg).save_pretrained(directory)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=16,
                   image_token="<image>").save_pretrained(directory)
    return len(tok)


def test_built_in_architecture_loads_without_the_checkpoint_code(tmp_path):
    """A supported architecture loads with transformers' own classes even when auto_map names code."""
    from transformers import AutoModelForImageTextToText

    marker = tmp_path / "marker"
    ckpt = make_evil_checkpoint(tmp_path / "ckpt", marker, model_type="llava")
    auto_map = json.loads((ckpt / "config.json").read_text())["auto_map"]
    vocab = _tiny_llava_checkpoint(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    assert openvla_model_class(ckpt) is AutoModelForImageTextToText
    policy = load_policy(ckpt)
    assert type(policy.model).__name__ == "LlavaForConditionalGeneration"
    assert policy.action_dim == 7 and policy.action_tokenizer.vocab_size == vocab
    assert not marker.exists()


def test_trusted_load_does_run_the_code(tmp_path):
    """Control: the marker is a working detector (the code runs once the caller allows it)."""
    marker = tmp_path / "marker"
    ckpt = make_evil_checkpoint(tmp_path / "ckpt", marker)
    script = ("import sys\nfrom apo_core.policy import load_policy\n"
              "try:\n    load_policy(sys.argv[1], trust_remote_code=True)\n"
              "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    out = subprocess.run([sys.executable, "-c", script, str(ckpt)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "remote code ran", out.stdout + out.stderr
