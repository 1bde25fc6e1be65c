"""The memory planner and model shapes, checked against real models: parameter counts of meta models, parameter and
optimizer storage of real (LoRA, QLoRA) policies, and the activations autograd actually saves."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_cort.models.architectures import (
    KNOWN_ARCHITECTURES,
    Architecture,
    architecture_from_config,
    resolve_architecture,
)
from lightning_cort.planner import GiB, PlanInput, activation_bytes, format_plan, logits_bytes, plan_memory

PUBLISHED_BILLIONS = {  # parameter counts on the models' hub pages
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": 1.78,
    "deepseek-ai/deepseek-r1-distill-qwen-7b": 7.62,
    "deepseek-ai/deepseek-r1-distill-qwen-32b": 32.8,
    "qwen/qwen2.5-7b-instruct": 7.62,
    "qwen/qwen2.5-32b-instruct": 32.8,
}


@pytest.mark.parametrize("key", sorted(KNOWN_ARCHITECTURES))
def test_known_shapes_count_the_parameters_of_the_meta_model(key):
    arch = KNOWN_ARCHITECTURES[key]
    model = arch.meta_model()
    assert all(p.device.type == "meta" for p in model.parameters())
    assert arch.num_params == sum(p.numel() for p in model.parameters())
    if key in PUBLISHED_BILLIONS:
        assert round(arch.num_params / 1e9, 2 if arch.num_params < 1e10 else 1) == PUBLISHED_BILLIONS[key]


def test_resolve_architecture_from_a_directory_a_known_id_and_unknown(tmp_path, tokenizer):
    from lightning_cort.models.tiny import tiny_qwen2

    tiny_qwen2(tokenizer, hidden_size=128, num_layers=3).save_pretrained(tmp_path)
    arch = resolve_architecture(str(tmp_path))
    assert (arch.hidden_size, arch.num_layers, arch.vocab_size) == (128, 3, len(tokenizer))
    assert resolve_architecture("Qwen/Qwen2.5-7B-Instruct") is KNOWN_ARCHITECTURES["qwen/qwen2.5-7b-instruct"]
    with pytest.raises(ValueError, match="known models"):
        resolve_architecture("nobody/no-such-model")
    with pytest.raises(ValueError, match="lacks"):
        architecture_from_config({"model_type": "qwen2"}, "broken")


def _saved_activation_bytes(model: torch.nn.Module, ids: torch.Tensor, completion: int) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in the forward pass and the log-prob loss."""
    from lightning_cort.losses import token_logprobs

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids, logits_to_keep=completion + 1, use_cache=False).logits[:, :-1]
        token_logprobs(logits, ids[:, -completion:]).sum().backward()
    return sum(seen.values())


def test_activation_and_logit_estimates_match_what_autograd_saves():
    arch = Architecture("probe", "qwen2", 256, 3, 4, 2, 704, 1000)
    config = arch.to_hf_config()
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(config)
    batch, length, completion = 2, 384, 256
    ids = torch.randint(0, arch.vocab_size, (batch, length))
    measured = _saved_activation_bytes(model, ids, completion)
    estimate = activation_bytes(arch, batch * length, 4, False) + logits_bytes(
        arch, batch * completion, 4, grad=False, entropy=False
    )
    assert 0.7 < estimate / measured < 1.3, (estimate, measured)


def test_weights_adapters_and_optimizer_of_real_lora_and_qlora_policies(tmp_path, tokenizer):
    pytest.importorskip("bitsandbytes")
    from lightning_cort.models.policy import LoraSettings, PolicySettings, load_policy
    from lightning_cort.models.tiny import tiny_qwen2

    tiny_qwen2(tokenizer, hidden_size=256, num_layers=2, num_heads=4, intermediate_size=1024).save_pretrained(tmp_path)
    arch = resolve_architecture(str(tmp_path))
    targets = ["q_proj", "v_proj", "down_proj"]

    full = plan_memory(PlanInput(arch, dtype="float32"))
    model, _ = load_policy(PolicySettings(name_or_path=str(tmp_path), dtype="float32"), tokenizer)
    assert full.training["weights"] == sum(p.numel() * p.element_size() for p in model.parameters())

    lora = plan_memory(PlanInput(arch, dtype="float32", lora_r=8, lora_targets=targets))
    model, _ = load_policy(
        PolicySettings(name_or_path=str(tmp_path), dtype="float32", lora=LoraSettings(r=8, target_modules=targets)),
        tokenizer,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert lora.training["LoRA adapters"] == sum(p.numel() * p.element_size() for p in trainable)
    opt = torch.optim.AdamW(trainable)
    for p in trainable:
        p.grad = torch.ones_like(p)
    opt.step()
    states = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.dim())
    assert lora.training["optimizer states"] == states

    qlora = plan_memory(PlanInput(arch, dtype="bfloat16", lora_r=8, lora_targets=targets, quantization="4bit"))
    model, _ = load_policy(
        PolicySettings(
            name_or_path=str(tmp_path),
            dtype="bfloat16",
            quantization="4bit",
            lora=LoraSettings(r=8, target_modules=targets),
        ),
        tokenizer,
    )
    stored = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        stored += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:  # absmax (double-quantized) and its second-level constants
            stored += sum(t.numel() * t.element_size() for t in (state.absmax, state.state2.absmax, state.state2.code))
    assert 0.9 < qlora.training["weights"] / stored < 1.1, (qlora.training["weights"], stored)


def test_plans_for_real_shapes_tell_what_fits():
    r1 = KNOWN_ARCHITECTURES["deepseek-ai/deepseek-r1-distill-qwen-1.5b"]
    qlora = plan_memory(
        PlanInput(
            r1,
            lora_r=16,
            quantization="4bit",
            gradient_checkpointing=True,
            sequence_length=4608,
            completion_length=4096,
            rollout_backend="vllm",
            rollout_sequences=64,
            rollout_length=4608,
            vllm_memory=0.35,
            gpu_memory_gb=24,
        )
    )
    assert qlora.fits, format_plan(qlora)
    full = plan_memory(PlanInput(r1, sequence_length=16384, completion_length=16000, gpu_memory_gb=24))
    assert not full.fits
    text = format_plan(full)
    assert "DOES NOT FIT" in text and "gradient_checkpointing" in text and "LoRA" in text
    big = KNOWN_ARCHITECTURES["deepseek-ai/deepseek-r1-distill-qwen-32b"]
    sharded = plan_memory(PlanInput(big, shards=8, gradient_checkpointing=True, ranks_per_node=8, gpu_memory_gb=80))
    unsharded = plan_memory(PlanInput(big, shards=1, gradient_checkpointing=True, gpu_memory_gb=80))
    assert sharded.training["optimizer states"] * 8 == unsharded.training["optimizer states"]
    assert sharded.host_ram_bytes == 8 * big.num_params * 2
    assert json.loads(json.dumps(sharded.to_dict()))["limit_gib"] == round(80 * 0.9, 2)
    starved = plan_memory(PlanInput(big, shards=8, rollout_backend="vllm", vllm_memory=0.3, gpu_memory_gb=80))
    assert any("cannot hold its own weights" in n for n in starved.notes)
    assert GiB == 2**30
