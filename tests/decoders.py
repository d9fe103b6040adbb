"""Tiny decoder LMs for the causal-LM tests, built here because no pretrained decoder can be
downloaded: a byte-level BPE tokenizer trained on the toy sentiment rows (``tests.conftest.make_rows``),
a GPT-2 (tied embeddings, no pad token, like the real one) and a Llama-style model (grouped-query
attention: 4 query heads over 2 key/value heads, untied output embeddings, a BOS token and a chat
template), each pretrained for a few hundred steps on the rows' text (the language-model objective,
no sentiment words after the text) and saved as a model folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conftest import make_rows

#: the completion word of each toy label (SFT: "text -> sentiment word")
WORDS = {"pos": "positive", "neg": "negative", "neutral": "neutral"}
PROMPT = "{text}\nSentiment:"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PRETRAIN_STEPS = 300


def build_tokenizer(folder: Path, kind: str):
    """A byte-level BPE tokenizer saved to ``folder``: ``gpt2`` (one ``<|endoftext|>`` token for BOS,
    EOS and unknown; no pad token) or ``llama`` (``<s>`` prepended, ``</s>``, a chat template; no pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = (
        ["<|endoftext|>"]
        if kind == "gpt2"
        else ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    )
    texts = [t for t, _ in make_rows(600, seed=11)] + [
        " ".join(WORDS.values()) + " Sentiment: user assistant"
    ] * 300
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if kind == "gpt2":
        out = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        out = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        out.chat_template = CHAT_TEMPLATE
    out.save_pretrained(folder)
    return out


def build_decoder(folder: Path, kind: str, steps: int = PRETRAIN_STEPS, seed: int = 0) -> Path:
    """Build, pretrain (``steps`` Adam steps on the rows' text) and save a tiny decoder in ``folder``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder, kind)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain(folder, kind, tokenizer, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _pretrain(folder: Path, kind: str, tokenizer, steps: int, seed: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if kind == "gpt2":
        eos = tokenizer.eos_token_id
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=64,
                n_layer=2,
                n_head=4,
                n_positions=96,
                bos_token_id=eos,
                eos_token_id=eos,
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                max_position_embeddings=96,
                tie_word_embeddings=False,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    rng = random.Random(seed)
    # the rows' text, half of them followed by a sentiment word drawn independently of the row's label:
    # the model knows the words and the format, not which word fits which text (SFT's job)
    texts = [
        t if i % 2 else PROMPT.format(text=t) + " " + rng.choice(list(WORDS.values()))
        for i, (t, _) in enumerate(make_rows(600, seed=12))
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 32), padding=False)["input_ids"]
        width = max(len(x) for x in batch)
        ids = torch.tensor([x + [0] * (width - len(x)) for x in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(folder)
    (folder / "pretraining.json").write_text(
        json.dumps({"steps": steps, "final_loss": float(loss.detach())})
    )
    return folder


def write_sft_jsonl(path: Path, n: int, seed: int = 0, chat: bool = False) -> Path:
    """``n`` toy rows as SFT JSONL: ``{"prompt": "<text>\\nSentiment:", "completion": " <word>"}``, or
    ``{"messages": [user, assistant]}`` with ``chat``."""
    with open(path, "w", encoding="utf-8") as fh:
        for text, label in make_rows(n, seed=seed):
            if chat:
                record = {
                    "messages": [
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": WORDS[label]},
                    ]
                }
            else:
                record = {"prompt": PROMPT.format(text=text), "completion": " " + WORDS[label]}
            fh.write(json.dumps(record) + "\n")
    return path
