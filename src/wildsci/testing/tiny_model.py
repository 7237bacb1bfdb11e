"""A tiny Qwen2 for unit tests: random weights, a BPE tokenizer trained here, a ChatML chat template.

Why train the tokenizer with Qwen2's own split rules: for ``model_type=qwen2`` ``AutoTokenizer`` rebuilds a
``Qwen2Tokenizer`` from ``vocab``/``merges`` and applies Qwen2's pre-tokenizer regardless of what
``tokenizer.json`` says. A tokenizer trained with different rules would silently produce other ids after
reloading. :func:`build_tiny_qwen2` asserts that ids round-trip through a save/load.
"""

from __future__ import annotations

from pathlib import Path

from wildsci.answers import LETTERS

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VOCAB_SIZE = 1024


def _training_corpus() -> list[str]:
    """Text in the shape the tests will feed: taxonomy words, the prompt format, answer formats."""
    from wildsci.prompts import SYSTEM_PROMPT, format_question
    from wildsci.taxonomy import load_taxonomy

    tax = load_taxonomy()
    texts = [SYSTEM_PROMPT]
    for s in tax.subdomains:
        texts += [s.name, s.description, s.discipline, s.nc_domain]
        opts = [f"{s.name} option {i}" for i in range(10)]
        texts.append(format_question(f"Which statement about {s.description.lower()} is correct?", opts))
    for letter in LETTERS:
        texts += [f"\\boxed{{{letter}}}", f"The answer is {letter}.", f"Answer: {letter}", f"({letter})"]
    return texts * 3


def build_tiny_qwen2(out: Path, seed: int = 0) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)

    reloaded = AutoTokenizer.from_pretrained(out)
    probe = "Which option is correct? \\boxed{C} The answer is (J).\n<|im_end|>"
    if reloaded(probe)["input_ids"] != fast(probe)["input_ids"]:
        raise RuntimeError("tiny tokenizer ids do not round-trip through AutoTokenizer (Qwen2 split rules changed?)")
