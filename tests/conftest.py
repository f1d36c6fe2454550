"""Shared fixtures: a tiny random Qwen2 built once per session, ONE Ray start-up for every Ray test, and
helpers to compose our hydra config and run verl's trainer in-process.

The Ray fixture switches this pytest process into CPU mode (``himac_verl.cpu.enable``) because the driver
and every Ray process must agree on the platform; it stays on for the rest of the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# re-exported: the tests import these from conftest
from himac_verl.trainer.runs import compose_config, read_metrics, wait_named_actors_gone  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a random tiny Qwen2 + byte-level BPE tokenizer (built offline, once per session)."""
    from himac_verl.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def sokoban_agent_dir() -> str:
    """The main job's starting model (``himac.model=sokoban_agent``), built once into the cache (about 9
    minutes on 2 cores; reused when the cache holds it): the Sokoban trainer and learning tests share it."""
    from himac_verl.main import resolve_model_path

    return resolve_model_path("sokoban_agent")


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once for the whole session (CPU mode, declared GPUs) and shut it down at the end."""
    import ray

    from himac_verl import cpu

    cpu.enable()
    if not ray.is_initialized():
        ray.init(
            num_cpus=16,
            num_gpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": cpu.ray_env_vars()},
            log_to_driver=os.environ.get("HIMAC_TEST_RAY_LOGS", "0") == "1",
        )
    yield ray
    ray.shutdown()


def run_trainer(overrides: list[str]) -> None:
    """Run verl's trainer through our entry point's ``run`` on the session's Ray."""
    from himac_verl.main import run

    run(compose_config(overrides))
    wait_named_actors_gone()


def build_tiny_qwen2_5_vl(path) -> str:
    """A random tiny Qwen2.5-VL (~200k params) + processor, offline (recipe: shared notes vl-on-cpu.md)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )
    from transformers.video_processing_utils import BaseVideoProcessor

    from himac_verl.cpu import vision

    vision.apply()
    path = Path(path)
    if (path / "config.json").exists():
        return str(path)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["push the box left right up down onto the target. The room: # _ O X P"] * 8,
                            trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=template)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64, patch_size=14,
                                               temporal_patch_size=2, merge_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                    video_processor=BaseVideoProcessor(), chat_template=template)
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, out_hidden_size=64,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    import torch

    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vl_model_dir(tmp_path_factory) -> str:
    """Path of a random tiny Qwen2.5-VL with its processor (built offline, once per session)."""
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))
