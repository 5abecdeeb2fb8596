"""A tiny real Llama for unit tests: built from a config, tokenizer trained locally (docs/design.md §6).

No weights are downloaded or shipped. The tokenizer is a byte-level BPE trained by `tokenizers` on a
small built-in corpus of E1/E2-shaped text, so any string round-trips; the chat template is
SmolLM2-Instruct's ChatML, so prompts look like the embedded model's. Building takes about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

# SmolLM2-135M-Instruct's chat template (ChatML with a default system message).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

VOCAB_SIZE = 1024


def _corpus() -> list[str]:
    """E1 flows, JSON answers, E2-ish snippets and chat scaffolding, varied so BPE learns merges."""
    protocols = ["tcp", "udp", "icmp"]
    flags = ["[S]", "[S, A]", "[F, A]", "[R]", "[]", "[P, A]"]
    lines = [
        "Device unknown-device observed tcp 43750→23, duration 3.107256, bytes ?, flags [S]. "
        "Decide: Malicious or Benign (you may Abstain if unsure).",
        "You are a network security analyst. Answer with JSON only.",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n"
        "    image: nginx:latest\n    securityContext:\n      privileged: true\n",
        'resource "aws_s3_bucket" "logs" {\n  bucket = "logs"\n  acl    = "public-read"\n}\n',
        '{"violations": [{"id": "kube-linter/privileged-container", "severity": "high"}], "patch": "", '
        '"confidence": 0.8}',
        "--- a/pod.yaml\n+++ b/pod.yaml\n@@ -1,3 +1,3 @@\n-  privileged: true\n+  privileged: false\n",
        "Write one new problem for a student. Think step by step, then answer.",
    ]
    for i in range(60):
        proto = protocols[i % 3]
        sport, dport = 1024 + (i * 7919) % 60000, [23, 80, 443, 22, 53, 8080, 2323][i % 7]
        duration = f"{(i * 0.37) % 9:.6f}"
        size = "?" if i % 4 == 0 else str((i * 131) % 5000)
        lines.append(
            f"Device unknown-device observed {proto} {sport}→{dport}, duration {duration}, bytes {size}, "
            f"flags {flags[i % len(flags)]}. Decide: Malicious or Benign (you may Abstain if unsure)."
        )
        label = ["Benign", "Malicious", "Abstain"][i % 3]
        answer = {"label": label, "confidence": round((i % 10) / 10 + 0.05, 2)}
        if i % 2:
            answer["rationale"] = f"port {dport} with flags {flags[i % len(flags)]}"
        lines.append(json.dumps(answer))
        lines.append(f"```json\n{json.dumps(answer)}\n```")
    return lines


def build_tiny_llama(folder: Path) -> Path:
    """Save a tiny LlamaForCausalLM and its tokenizer to `folder`; return the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte -> any text round-trips
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",  # an instruct model ends its turn with <|im_end|>, as SmolLM2 does
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # At the default 0.02 a random model greedily repeats one token forever; 0.2 gives varied,
        # prompt-dependent text, so tests of batching, stopping and adapters compare real outputs.
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder
