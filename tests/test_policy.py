"""The model path: tiny and from-disk policies, LoRA, QLoRA (real bitsandbytes on CPU), activation checkpointing,
export in the three formats, and clear errors for unsupported combinations."""

from __future__ import annotations

import warnings

import pytest
import torch

from lightning_cort._imports import BITSANDBYTES_AVAILABLE
from lightning_cort.models.policy import (
    LoraSettings,
    PolicySettings,
    disable_cpu_4bit_repacking,
    export_policy,
    is_peft_model,
    is_quantized,
    load_policy,
)
from lightning_cort.models.tiny import TinyConfig

needs_bnb = pytest.mark.skipif(not BITSANDBYTES_AVAILABLE, reason="bitsandbytes is not installed (extra 'qlora')")
SMALL_LORA = LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])


@pytest.fixture(scope="module")
def saved_tiny(tokenizer, tmp_path_factory):
    """A tiny policy saved in HF format, as a user's checkpoint would be."""
    model, tok = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    path = tmp_path_factory.mktemp("tiny_ckpt")
    export_policy(model, tok, path, mode="full")
    return path


def _batch(tokenizer, n=2):
    ids = torch.tensor([tokenizer.encode("12 * 34 = 408")] * n)
    return ids, torch.ones_like(ids)


def _loss(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask, labels=ids).loss


def test_tiny_policy_trains_every_parameter(tokenizer):
    model, tok = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    assert tok is tokenizer and model.training
    assert all(p.requires_grad for p in model.parameters())


def test_lora_trains_only_adapters_and_disable_adapter_is_the_base(tokenizer):
    model, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2), lora=SMALL_LORA), tokenizer)
    assert is_peft_model(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids, mask = _batch(tokenizer)
    base, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    with torch.no_grad():
        for p in model.parameters():  # make the adapter non-zero so the two paths differ
            if p.requires_grad:
                p.add_(0.05)
        with model.disable_adapter():
            off = model(input_ids=ids, attention_mask=mask).logits
        on = model(input_ids=ids, attention_mask=mask).logits
        ref = base(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(off, ref)
    assert not torch.allclose(on, ref)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    ids, mask = _batch(tokenizer)
    grads = []
    for ckpt in (False, True):
        model, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2), gradient_checkpointing=ckpt), tokenizer)
        _loss(model, ids, mask).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_from_disk_with_its_tokenizer(saved_tiny, tokenizer):
    model, tok = load_policy(PolicySettings(name_or_path=str(saved_tiny)))
    assert tok.encode("12 * 34 = 408") == tokenizer.encode("12 * 34 = 408")
    assert model.training and model.dtype == torch.float32


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (PolicySettings(quantization="4bit"), "set `lora` too"),
        (PolicySettings(name_or_path=None, lora=SMALL_LORA, quantization="4bit"), "needs a checkpoint"),
        (PolicySettings(dtype="float64"), "dtype must be one of"),  # type: ignore[arg-type]
        (PolicySettings(lora=LoraSettings(r=0)), "lora.r must be >= 1"),
    ],
)
def test_unsupported_combinations_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        load_policy(settings)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="could not load model"):
        load_policy(PolicySettings(name_or_path=str(tmp_path / "nope")))


def test_export_modes_roundtrip(tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2), lora=SMALL_LORA), tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    ids, mask = _batch(tokenizer)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    merged = AutoModelForCausalLM.from_pretrained(export_policy(model, tok, tmp_path / "merged", mode="merged"))
    adapter_dir = export_policy(model, None, tmp_path / "adapter", mode="adapter")
    base, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    with_adapter = PeftModel.from_pretrained(base.eval(), adapter_dir)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(with_adapter(input_ids=ids, attention_mask=mask).logits, expected)
    assert is_peft_model(model)  # merging worked on a copy
    with pytest.raises(ValueError, match="no standalone full weights"):
        export_policy(model, None, tmp_path / "x", mode="full")
    with pytest.raises(ValueError, match="needs a LoRA"):
        export_policy(base, None, tmp_path / "y", mode="adapter")


@needs_bnb
def test_qlora_trains_after_an_eval_mode_generate(saved_tiny, tokenizer):
    """The RL order on CPU: generate in eval mode, then train. Without the repacking fix the 4-bit layers lose
    their input gradients or fail; here every LoRA parameter must get a gradient and change."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_policy(PolicySettings(name_or_path=str(saved_tiny), lora=SMALL_LORA, quantization="4bit"))
    assert is_quantized(model) and is_peft_model(model)
    assert disable_cpu_4bit_repacking(model) > 0
    ids, mask = _batch(tokenizer)
    model.eval()
    with torch.no_grad():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=3, do_sample=False)
    model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _loss(model, ids, mask).backward()
        assert all(p.grad is not None for p in params.values())
        opt.step()
    changed = [n for n, p in params.items() if not torch.equal(p, before[n])]
    assert sorted(changed) == sorted(params)
    with pytest.raises(ValueError, match="cannot merge LoRA into 4-bit"):
        export_policy(model, None, saved_tiny.parent / "q", mode="merged")


def test_policy_weights_merge_lora_on_the_fly(tokenizer):
    """What a generation engine receives for a LoRA policy equals the merged model's weights, and the policy itself
    is left untouched."""
    from lightning_cort.models.policy import policy_weights

    model, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2), lora=SMALL_LORA), tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    synced = dict(policy_weights(model))
    import copy

    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert synced.keys() == merged.keys()
    for name, value in merged.items():
        torch.testing.assert_close(synced[name], value, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    plain, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    assert dict(policy_weights(plain)).keys() == plain.state_dict().keys()


@pytest.mark.parametrize("quantization", [None, pytest.param("4bit", marks=needs_bnb)])
def test_lora_and_qlora_policies_decode_the_same_with_the_stream_as_with_generate(
    saved_tiny, tokenizer, sandbox, quantization
):
    """The continuous schedule's decode stream runs on peft-wrapped and 4-bit policies: greedy rollouts equal the
    ``generate`` ones, and a 4-bit policy still trains afterwards."""
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_policy(PolicySettings(name_or_path=str(saved_tiny), lora=SMALL_LORA, quantization=quantization))
    assert is_peft_model(model)
    model.eval()
    out = {}
    for schedule in ("rounds", "continuous"):
        config = RolloutConfig(max_total_tokens=24, schedule=schedule, sampling=SamplingConfig(temperature=0))
        engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, CoRTFormat(), sandbox, config)
        trajs = engine.generate(engine.encode_prompts(["What is 12 * 34?", "Add 5 and 7."]), n=2)
        out[schedule] = [t.completion_ids.tolist() for t in trajs]
    assert out["continuous"] == out["rounds"] and all(len(c) > 0 for c in out["rounds"])
    model.train()
    ids, mask = _batch(tokenizer)
    _loss(model, ids, mask).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
