"""A text tokenizer built locally (no hub download) with the action tokens at the end of the vocabulary.

Byte-level BPE trained on a small built-in corpus of robot instructions, so any string encodes; the
``n_action_tokens`` reserved tokens ``<act_000>``... are appended last, which is what lets the
OpenVLA action tokenizer (``token = vocab_size - bin``) address them.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from apo_core.policy.prompt import PROMPT_TEMPLATE

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

_CORPUS = [
    PROMPT_TEMPLATE,
    "lift the cube", "pick up the red cube", "lift the red cube off the table",
    "stack the red cube on the green cube", "put the red block on top of the green block",
    "pick the can and place it in the bin", "place the square nut on the square peg",
    "open the drawer", "close the drawer", "push the button", "move the arm to the left",
    "grasp the object and lift it", "put the cup on the plate", "pour the water into the bowl",
    "insert the peg into the hole", "turn the knob", "slide the block to the goal",
    "wipe the table with the sponge", "hang the tool on the hook", "pick up the bottle",
]


def build_text_tokenizer(text_vocab_size: int = 512, n_action_tokens: int = 256) -> PreTrainedTokenizerFast:
    """Deterministically build the tokenizer; its vocabulary is ``text_vocab_size + n_action_tokens``."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=text_vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    # Pad the text vocabulary to exactly text_vocab_size so the action ids do not depend on BPE luck.
    filler = text_vocab_size - tok.get_vocab_size()
    if filler < 0:
        raise ValueError(f"text_vocab_size {text_vocab_size} is below the byte alphabet + specials")
    tok.add_tokens([f"<unused_{i:03d}>" for i in range(filler)])
    tok.add_special_tokens([action_token_name(i) for i in range(n_action_tokens)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    expected = text_vocab_size + n_action_tokens
    if len(fast) != expected:
        raise RuntimeError(f"built tokenizer has {len(fast)} tokens, expected {expected}")
    return fast


def action_token_name(i: int) -> str:
    return f"<act_{i:03d}>"
