"""Random-weight Gemma 4 GGUF files (GGUF arch ``gemma4``) that llama.cpp loads and runs.

Gemma 4 E2B is not Gemma 2 with other numbers: per-layer embeddings (a second, 35x256-wide
embedding table mixed into every layer), a 4-sliding : 1-full attention pattern with different
head sizes (256 sliding, 512 full, proportional RoPE on the full layers), the last 20 layers
reading the KV cache of earlier ones instead of computing their own, and double-wide MLPs in
those shared layers. Its speed depends on all of that, so the timing twin carries every one of
these features with E2B's public-config numbers (google/gemma-4-E2B-it ``text_config``); the
tiny model carries the same features at toy sizes, for tests of structure and chat template.

The tokenizer is a SentencePiece-style ("llama") vocabulary with Gemma 4's control tokens, not
the real file's ``gemma4`` BPE: what tests and timings need from it is the chat framing
(``<|turn>``, ``<turn|>``, ``<|think|>`` and the thought channel ``<|channel>`` / ``<channel|>``,
which are USER_DEFINED like in the real file, so llama.cpp renders them as text).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevoice.devtools import gguf_model as g2

# A chat template written for these models with Gemma 4's prompt format (system turn, turns,
# thinking switch, thoughts stripped from history, an empty thought channel pre-filled when
# thinking is off). Tools and images are left out: edgevoice sends neither.
GEMMA4_CHAT_TEMPLATE = (
    "{%- macro without_thoughts(text) -%}"
    "{%- set ns = namespace(out='') -%}"
    "{%- for part in text.split('<channel|>') -%}"
    "{%- if '<|channel>' in part -%}{%- set ns.out = ns.out + part.split('<|channel>')[0] -%}"
    "{%- else -%}{%- set ns.out = ns.out + part -%}{%- endif -%}"
    "{%- endfor -%}{{- ns.out | trim -}}"
    "{%- endmacro -%}"
    "{%- set think = enable_thinking is defined and enable_thinking -%}"
    "{%- set rest = messages -%}"
    "{{ bos_token }}"
    "{%- if think or messages[0]['role'] in ['system', 'developer'] -%}"
    "{{- '<|turn>system\\n' -}}{%- if think -%}{{- '<|think|>' -}}{%- endif -%}"
    "{%- if messages[0]['role'] in ['system', 'developer'] -%}"
    "{{- messages[0]['content'] | trim -}}{%- set rest = messages[1:] -%}{%- endif -%}"
    "{{- '<turn|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' -}}"
    "{%- if role == 'model' -%}{{- without_thoughts(message['content']) -}}"
    "{%- else -%}{{- message['content'] | trim -}}{%- endif -%}"
    "{{- '<turn|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}"
    "{%- if not think -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}"
    "{%- endif -%}"
)

CONTROL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|think|>")
THOUGHT_OPEN, THOUGHT_CLOSE = "<|channel>", "<channel|>"
USER_DEFINED_TOKENS = (THOUGHT_OPEN, THOUGHT_CLOSE)

RMS_NORM_EPS = 1e-6
FINAL_LOGIT_SOFTCAP = 30.0
ROPE_BASE_FULL, ROPE_BASE_SWA = 1_000_000.0, 10_000.0
PARTIAL_ROTARY_FULL = 0.25  # "proportional" RoPE: a quarter of a full layer's head rotates
LAYER_OUTPUT_SCALE = 0.5


@dataclass(frozen=True)
class Gemma4Shape:
    """The numbers that decide a Gemma 4 (dense) model's tensor shapes and so its speed."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_swa: int
    head_dim_full: int
    n_ff: int
    n_embd_per_layer: int  # per-layer embedding width (PLE)
    n_kv_shared_layers: int  # the last layers reuse earlier layers' KV cache
    full_every: int  # every n-th layer is full attention, the others sliding-window
    sliding_window: int
    context_length: int
    n_vocab: int | None  # None: just the base vocabulary (tiny model)
    double_wide_shared_mlp: bool = True

    def is_swa(self, layer: int) -> bool:
        return (layer + 1) % self.full_every != 0

    def has_kv(self, layer: int) -> bool:
        return layer < self.n_layer - self.n_kv_shared_layers

    def n_ff_at(self, layer: int) -> int:
        wide = self.double_wide_shared_mlp and not self.has_kv(layer)
        return self.n_ff * (2 if wide else 1)

    def head_dim(self, layer: int) -> int:
        return self.head_dim_swa if self.is_swa(layer) else self.head_dim_full


# google/gemma-4-E2B-it config.json, text_config: hidden 1536, 35 layers, 8 heads / 1 KV head,
# head_dim 256 (sliding) / global_head_dim 512, intermediate 6144 (x2 in the KV-shared layers:
# use_double_wide_mlp), hidden_size_per_layer_input 256, num_kv_shared_layers 20,
# layer_types 4x sliding + full, sliding_window 512, vocab 262144.
GEMMA4_E2B_SHAPE = Gemma4Shape(
    n_layer=35, n_embd=1536, n_head=8, n_head_kv=1, head_dim_swa=256, head_dim_full=512,
    n_ff=6144, n_embd_per_layer=256, n_kv_shared_layers=20, full_every=5, sliding_window=512,
    context_length=131072, n_vocab=262144,
)
# The same features at toy sizes: 10 layers (full at 4 and 9), the last 5 share KV (so layer
# 4 is the last full and 3 the last sliding layer with a cache, as 14 and 13 are in E2B).
GEMMA4_TINY_SHAPE = Gemma4Shape(
    n_layer=10, n_embd=64, n_head=2, n_head_kv=1, head_dim_swa=16, head_dim_full=32,
    n_ff=96, n_embd_per_layer=8, n_kv_shared_layers=5, full_every=5, sliding_window=32,
    context_length=8192, n_vocab=None,
)


def tensor_specs(shape: Gemma4Shape, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Gemma 4's tensors in llama.cpp's names, numpy shapes (the reverse of ggml's).

    The output projection is tied to ``token_embd``; KV-shared layers have no K/V projections
    (llama.cpp computes none for them); one ``rope_freqs`` serves every full layer.
    """
    d, ple = shape.n_embd, shape.n_embd_per_layer
    yield "token_embd.weight", (n_vocab, d)
    yield "per_layer_token_embd.weight", (n_vocab, ple * shape.n_layer)
    yield "per_layer_model_proj.weight", (ple * shape.n_layer, d)
    yield "per_layer_proj_norm.weight", (ple,)
    yield "output_norm.weight", (d,)
    yield "rope_freqs.weight", (shape.head_dim_full // 2,)
    for i in range(shape.n_layer):
        p, hd, ff = f"blk.{i}.", shape.head_dim(i), shape.n_ff_at(i)
        yield p + "attn_norm.weight", (d,)
        yield p + "attn_q.weight", (shape.n_head * hd, d)
        if shape.has_kv(i):
            yield p + "attn_k.weight", (shape.n_head_kv * hd, d)
            yield p + "attn_v.weight", (shape.n_head_kv * hd, d)
            yield p + "attn_k_norm.weight", (hd,)
        yield p + "attn_q_norm.weight", (hd,)
        yield p + "attn_output.weight", (d, shape.n_head * hd)
        yield p + "post_attention_norm.weight", (d,)
        yield p + "ffn_norm.weight", (d,)
        yield p + "ffn_gate.weight", (ff, d)
        yield p + "ffn_up.weight", (ff, d)
        yield p + "ffn_down.weight", (d, ff)
        yield p + "post_ffw_norm.weight", (d,)
        yield p + "inp_gate.weight", (ple, d)
        yield p + "proj.weight", (d, ple)
        yield p + "post_norm.weight", (d,)
        yield p + "layer_output_scale.weight", (1,)


def rope_freqs(shape: Gemma4Shape) -> Any:
    """Proportional RoPE as the converter writes it: factor 1 for the rotated quarter of a full
    layer's head, 1e30 (no rotation) for the rest."""
    import numpy as np

    half = shape.head_dim_full // 2
    rotated = int(shape.head_dim_full * PARTIAL_ROTARY_FULL / 2)
    return np.array([1.0] * rotated + [1e30] * (half - rotated), dtype=np.float32)


def _tensor(rng: Any, name: str, shape: Gemma4Shape, np_shape: tuple[int, ...], dtype: Any,
            vocab: g2.Vocab, loud: list[int]) -> Any:
    import numpy as np

    if name == "rope_freqs.weight":
        return rope_freqs(shape)
    if name.endswith("layer_output_scale.weight"):
        # Gemma 4 scales the whole residual stream after each layer (learned, below 1). At 1 a
        # random model's residual keeps the current token's embedding and repeats it forever.
        return np.full(np_shape, LAYER_OUTPUT_SCALE, dtype=np.float32)
    embedding = name in ("token_embd.weight", "per_layer_token_embd.weight")
    out = g2._random_tensor(rng, "token_embd.weight" if embedding else name, np_shape, dtype,
                            vocab.quiet if embedding else [])
    if name == "token_embd.weight" and loud:
        out[loud] *= 8.0  # a tied embedding row this long wins the logits often: emitted a lot
    return out


def _new_writer(path: Path, shape: Gemma4Shape, vocab: g2.Vocab, name: str,
                file_type: int) -> Any:
    """A GGUFWriter with the metadata convert_hf_to_gguf writes for a Gemma 4 model."""
    import gguf

    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA4])
    w.add_name(name)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length([shape.n_ff_at(i) for i in range(shape.n_layer)])
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_key_length(shape.head_dim_full)
    w.add_value_length(shape.head_dim_full)
    w.add_key_length_swa(shape.head_dim_swa)
    w.add_value_length_swa(shape.head_dim_swa)
    w.add_rope_dimension_count(shape.head_dim_full)
    w.add_rope_dimension_count_swa(shape.head_dim_swa)
    w.add_rope_freq_base(ROPE_BASE_FULL)
    w.add_rope_freq_base_swa(ROPE_BASE_SWA)
    w.add_layer_norm_rms_eps(RMS_NORM_EPS)
    w.add_sliding_window(shape.sliding_window)
    w.add_sliding_window_pattern([shape.is_swa(i) for i in range(shape.n_layer)])
    w.add_shared_kv_layers(shape.n_kv_shared_layers)
    w.add_embedding_length_per_layer_input(shape.n_embd_per_layer)
    w.add_final_logit_softcapping(FINAL_LOGIT_SOFTCAP)
    w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_bos_token_id(g2.BOS_ID)
    w.add_eos_token_id(g2.EOS_ID)
    w.add_unk_token_id(g2.UNK_ID)
    w.add_pad_token_id(g2.PAD_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(GEMMA4_CHAT_TEMPLATE)
    return w


def build_gemma4_vocab(n_vocab: int | None = None) -> g2.Vocab:
    return g2.build_vocab(n_vocab, specials=CONTROL_TOKENS, user_defined=USER_DEFINED_TOKENS)


def write_tiny_gemma4(path: Path, *, seed: int = 0, chatty_thoughts: bool = False) -> Path:
    """Write a tiny random Gemma 4 (10 layers, d=64, every architecture feature) in ~1 MB.

    ``chatty_thoughts`` makes it emit the thought-channel markers often (their embedding rows
    are long), so tests can check that none of them reaches the text.
    """
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)
    vocab = build_gemma4_vocab()
    loud = [vocab.tokens.index(t) for t in USER_DEFINED_TOKENS] if chatty_thoughts else []
    quiet = [i for i in vocab.quiet if i not in loud]
    vocab = g2.Vocab(vocab.tokens, vocab.scores, vocab.types, quiet)
    shape = GEMMA4_TINY_SHAPE
    with g2._temp_path(path, ".tmp") as tmp:
        w = _new_writer(tmp, shape, vocab, "edgevoice-tiny-gemma4", gguf.LlamaFileType.ALL_F32)
        try:
            for name, s in tensor_specs(shape, len(vocab.tokens)):
                w.add_tensor(name, _tensor(rng, name, shape, s, np.float32, vocab, loud))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
        os.replace(tmp, path)
    return path


def write_twin_f16(path: Path, shape: Gemma4Shape, say: g2.Progress) -> None:
    """Write a full-size Gemma 4 twin in f16, one tensor in memory at a time."""
    import gguf
    import numpy as np

    assert shape.n_vocab is not None
    rng = np.random.default_rng(0)
    vocab = build_gemma4_vocab(shape.n_vocab)
    specs = list(tensor_specs(shape, shape.n_vocab))
    total = sum(g2._nbytes(s) for _, s in specs)
    w = _new_writer(path, shape, vocab, "edgevoice-gemma4-e2b-twin", gguf.LlamaFileType.MOSTLY_F16)
    try:
        for name, s in specs:
            w.add_tensor_info(name, s, np.dtype(g2._twin_dtype(s)), g2._nbytes(s))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done = 0
        for name, s in specs:
            w.write_tensor_data(_tensor(rng, name, shape, s, g2._twin_dtype(s), vocab, []))
            done += g2._nbytes(s)
            if name.endswith("embd.weight") or name.endswith("layer_output_scale.weight"):
                say(f"f16 {name.rsplit('.', 2)[0]} written ({done / total:.0%})")
    finally:
        w.close()
