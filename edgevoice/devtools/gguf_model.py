"""Random-weight Gemma 2 GGUF files that llama.cpp really loads and runs.

Tests need a real llama.cpp model without downloading gated weights: a tiny one (loads in
milliseconds, says gibberish) drives the whole local-LLM path, tokenizer and chat template
included; a "twin" with Gemma 2 2B's exact shapes times the real model honestly, because
compute cost depends on shapes, not on weight values.

``gguf`` (a test-only dependency), ``numpy`` and ``llama_cpp`` are imported inside the functions,
so importing this module costs nothing.

    python -m edgevoice.devtools.gguf_model tiny OUT.gguf [--arch gemma2|gemma4]
    python -m edgevoice.devtools.gguf_model twin OUT.gguf [--shape gemma-2-2b|gemma-4-e2b]
                                                          [--quant Q4_K_M]

Gemma 4 (arch ``gemma4``: per-layer embeddings, shared KV, sliding pattern) lives in
``gguf_gemma4``; this module has the shared parts and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# Gemma 2's own chat template (google/gemma-2-*-it tokenizer_config.json): it refuses a system
# role and roles that don't alternate, which is exactly what our prompt code must cope with.
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# Gemma 2's attention and output hyperparameters (same for 2B, 9B and 27B).
SLIDING_WINDOW = 4096
ATTN_LOGIT_SOFTCAP = 50.0
FINAL_LOGIT_SOFTCAP = 30.0
RMS_NORM_EPS = 1e-6
CONTEXT_LENGTH = 8192

# Token ids as in the real Gemma vocabulary's first entries.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
SPACE = "\u2581"  # SentencePiece's "▁", which stands for a space inside pieces

# Word pieces so that everyday English tokenizes into fewer tokens than characters.
_WORDS = (
    "the a an and is it to of in on you i hello hi what time weather today light lights turn "
    "please yes no how are can do this that for with my your me set timer minutes play music "
    "stop thanks good morning off"
).split()


@dataclass(frozen=True)
class Gemma2Shape:
    """The numbers that decide a Gemma 2 model's tensor shapes (and so its speed)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int | None  # None: just the base vocabulary (tiny model)


TINY_SHAPE = Gemma2Shape(
    n_layer=2, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=128, n_vocab=None
)
GEMMA2_2B_SHAPE = Gemma2Shape(
    n_layer=26, n_embd=2304, n_head=8, n_head_kv=4, head_dim=256, n_ff=9216, n_vocab=256000
)


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    quiet: list[int]  # ids the random model should (almost) never emit: specials and raw bytes


_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _pseudo_word(i: int) -> str:
    """A distinct pronounceable piece for index ``i``: consonant-vowel syllables, ▁-prefixed."""
    syllables = []
    while True:
        i, r = divmod(i, len(_CONSONANTS) * len(_VOWELS))
        syllables.append(_CONSONANTS[r // len(_VOWELS)] + _VOWELS[r % len(_VOWELS)])
        if i == 0:
            break
        i -= 1
    return SPACE + "".join(syllables)


def build_vocab(n_vocab: int | None = None, *, specials: tuple[str, ...] = SPECIAL_TOKENS,
                user_defined: tuple[str, ...] = ()) -> Vocab:
    """A SentencePiece ("llama") vocabulary laid out like Gemma's, padded to ``n_vocab``.

    llama.cpp needs all 256 ``<0xXX>`` byte tokens (byte fallback, or tokenizing throws) and the
    chat control tokens (``specials``, CONTROL; pad/eos/bos/unk first). ``user_defined`` tokens
    are specials that llama.cpp renders as text (Gemma 4's thought-channel markers). Its SPM
    tokenizer only merges a pair of symbols into a piece that exists, so every word piece comes
    with all its prefixes (▁t, ▁th, ▁the). Padding tokens are pronounceable pseudo-words that
    text never tokenizes into (their prefixes are missing).
    """
    from gguf import TokenType

    tokens: list[str] = list(specials) + list(user_defined)
    types: list[int] = ([TokenType.CONTROL] * len(specials)
                        + [TokenType.USER_DEFINED] * len(user_defined))
    types[UNK_ID] = TokenType.UNKNOWN
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    quiet = list(range(len(tokens)))
    scores = [0.0] * len(tokens)

    pieces = [SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    for word in _WORDS:
        pieces += [SPACE + word[:n] for n in range(1, len(word) + 1)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            scores.append(-float(len(scores)))  # earlier (shorter) pieces are more frequent
            types.append(TokenType.NORMAL)

    if n_vocab is not None:
        if n_vocab < len(tokens):
            raise ValueError(f"n_vocab {n_vocab} is smaller than the base vocabulary")
        # Padding is made of pronounceable pseudo-words, so what a random model generates can be
        # spoken and timed end to end (a model of real size mostly samples from the padding).
        for i in range(n_vocab - len(tokens)):
            word = _pseudo_word(i)
            while word in seen:
                i += n_vocab
                word = _pseudo_word(i)
            seen.add(word)
            tokens.append(word)
        scores += [-1e9] * (n_vocab - len(scores))
        types += [TokenType.NORMAL] * (n_vocab - len(types))
    return Vocab(tokens, scores, [int(t) for t in types], quiet)


def tensor_specs(shape: Gemma2Shape, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Gemma 2's tensors in llama.cpp's names, with numpy shapes (the reverse of ggml's).

    No ``output.weight``: Gemma ties the output projection to ``token_embd``.
    """
    d, ff = shape.n_embd, shape.n_ff
    q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    yield "token_embd.weight", (n_vocab, d)
    yield "output_norm.weight", (d,)
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (d,)
        yield p + "attn_q.weight", (q, d)
        yield p + "attn_k.weight", (kv, d)
        yield p + "attn_v.weight", (kv, d)
        yield p + "attn_output.weight", (d, q)
        yield p + "post_attention_norm.weight", (d,)
        yield p + "ffn_norm.weight", (d,)
        yield p + "ffn_gate.weight", (ff, d)
        yield p + "ffn_up.weight", (ff, d)
        yield p + "ffn_down.weight", (d, ff)
        yield p + "post_ffw_norm.weight", (d,)


def _random_tensor(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dtype: Any, quiet: list[int]
) -> np.ndarray:
    """Weights scaled so activations and logits stay in a sane range (no f16 overflow).

    Norm weights are 1 (llama.cpp multiplies by them as stored). The embedding is N(0, 4/sqrt(d)),
    so logits have a spread of about 4; the ``quiet`` rows are shrunk so those tokens' logits sit
    near 0 and sampling rarely picks them: the output is word pieces, not raw bytes or <eos>.
    """
    import numpy as np

    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    std = 4.0 / shape[1] ** 0.5 if name == "token_embd.weight" else 1.0 / shape[1] ** 0.5
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    step = 1 << 24  # bounded float32 scratch for the 1.2 GB embedding of the twin
    for start in range(0, flat.size, step):
        block = rng.standard_normal(min(step, flat.size - start), dtype=np.float32)
        block *= std
        flat[start : start + block.size] = block
    if name == "token_embd.weight" and quiet:
        out[quiet] *= 0.02
    return out


def _new_writer(path: Path, shape: Gemma2Shape, vocab: Vocab, name: str, file_type: int) -> Any:
    """A GGUFWriter holding the metadata llama.cpp reads for a Gemma 2 model."""
    import gguf

    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA2])
    w.add_name(name)
    w.add_context_length(CONTEXT_LENGTH)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_layer_norm_rms_eps(RMS_NORM_EPS)
    w.add_sliding_window(SLIDING_WINDOW)
    w.add_attn_logit_softcapping(ATTN_LOGIT_SOFTCAP)
    w.add_final_logit_softcapping(FINAL_LOGIT_SOFTCAP)
    w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(GEMMA2_CHAT_TEMPLATE)
    return w


@contextlib.contextmanager
def _temp_path(dest: Path, suffix: str) -> Iterator[Path]:
    """A fresh name beside ``dest`` (same filesystem, so ``os.replace`` is atomic); removed after.

    Not ``mkstemp``: its 0600 mode would survive the rename; the writer's own open honours umask.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_tiny_gemma2(path: Path, *, seed: int = 0, spaced_words: bool = False) -> Path:
    """Write a ~430 KB random Gemma 2 (2 layers, d=64, 471 tokens) that llama.cpp loads in ms.

    It has Gemma 2's metadata, tokenizer layout and chat template, so it exercises tokenizing,
    templating, prefix caching and streaming. Its text is gibberish made of word pieces and it
    (almost) never emits <eos>: assert structure, not content, and bound it with ``max_tokens``.

    Its tied embedding makes it repeat its first token, often a bare character ("iiii...": one
    word that no clause splitter may cut). ``spaced_words`` also quiets every piece that does not
    begin a word, so each token is a new ▁word and its text splits into clauses like a real
    model's (the latency bench's model: what it times is the agent, not the splitter's wait).
    """
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)
    vocab = build_vocab()
    if spaced_words:
        bare = [i for i, t in enumerate(vocab.tokens)
                if i not in vocab.quiet and (not t.startswith(SPACE) or t == SPACE)]
        vocab = Vocab(vocab.tokens, vocab.scores, vocab.types, vocab.quiet + bare)
    with _temp_path(path, ".tmp") as tmp:
        w = _new_writer(tmp, TINY_SHAPE, vocab, "edgevoice-tiny-gemma2", gguf.LlamaFileType.ALL_F32)
        try:
            for name, shape in tensor_specs(TINY_SHAPE, len(vocab.tokens)):
                w.add_tensor(name, _random_tensor(rng, name, shape, np.float32, vocab.quiet))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
        os.replace(tmp, path)
    return path


TWIN_SHAPES = ("gemma-2-2b", "gemma-4-e2b")


def write_gemma2_2b_twin(
    path: Path, *, quant: str = "Q4_K_M", progress: Progress | None = None
) -> Path:
    """Write a random model with Gemma 2 2B's exact shapes, quantized like the real GGUF."""
    return write_twin(path, "gemma-2-2b", quant=quant, progress=progress)


def write_twin(
    path: Path, shape: str = "gemma-2-2b", *, quant: str = "Q4_K_M",
    progress: Progress | None = None,
) -> Path:
    """Write a random model with a real model's exact shapes, quantized like the real GGUF.

    ``shape``: ``gemma-2-2b`` (5 GB of f16, 1.7 GB at Q4_K_M, about 3 minutes on two cores) or
    ``gemma-4-e2b`` (9.3 GB of f16, 3.4 GB at Q4_K_M: llama.cpp's own Q4_K_M recipe; the
    published unsloth file is 3.1 GB; 25 minutes on two busy cores). Streams f16
    tensors to a temp file beside ``path`` one at a time, then quantizes with llama.cpp
    (``quant`` is a llama_ftype suffix such as Q4_K_M or Q8_0; "F16" keeps f16) and renames into
    place, so ``path`` never holds a half-written file. For benchmarks only.
    """
    if shape not in TWIN_SHAPES:
        raise ValueError(f"unknown twin shape {shape!r}; choose one of {', '.join(TWIN_SHAPES)}")
    path = Path(path)
    say = progress or _quiet
    _llama_ftype(quant)  # fail on a bad name now, not after minutes of work
    with _temp_path(path, ".f16.tmp") as f16:
        if shape == "gemma-4-e2b":
            from edgevoice.devtools import gguf_gemma4

            gguf_gemma4.write_twin_f16(f16, gguf_gemma4.GEMMA4_E2B_SHAPE, say)
        else:
            _write_twin_f16(f16, say)
        if quant.upper() == "F16":
            os.replace(f16, path)
        else:
            say(f"quantizing to {quant} with llama.cpp")
            quantize(f16, path, quant, progress=say)
    say(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)")
    return path


def _write_twin_f16(path: Path, say: Progress) -> None:
    """Write the twin in f16, one tensor in memory at a time (the largest is 1.2 GB)."""
    import gguf
    import numpy as np

    shape = GEMMA2_2B_SHAPE
    assert shape.n_vocab is not None
    rng = np.random.default_rng(0)
    vocab = build_vocab(shape.n_vocab)
    specs = list(tensor_specs(shape, shape.n_vocab))
    total = sum(_nbytes(s) for _, s in specs)
    w = _new_writer(path, shape, vocab, "edgevoice-gemma2-2b-twin", gguf.LlamaFileType.MOSTLY_F16)
    try:
        for name, s in specs:
            w.add_tensor_info(name, s, np.dtype(_twin_dtype(s)), _nbytes(s))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done = 0
        for name, s in specs:
            w.write_tensor_data(_random_tensor(rng, name, s, _twin_dtype(s), vocab.quiet))
            done += _nbytes(s)
            if name == "token_embd.weight" or name.endswith("post_ffw_norm.weight"):
                say(f"f16 {name.rsplit('.', 2)[0]} written ({done / total:.0%})")
    finally:
        w.close()


def _twin_dtype(shape: tuple[int, ...]) -> Any:
    """f16 matrices, f32 norm vectors: what convert_hf_to_gguf writes for --outtype f16."""
    import numpy as np

    return np.float16 if len(shape) == 2 else np.float32


def _nbytes(shape: tuple[int, ...]) -> int:
    import numpy as np

    return int(np.prod(shape)) * np.dtype(_twin_dtype(shape)).itemsize


def _llama_ftype(quant: str) -> int:
    """``"Q4_K_M"`` -> ``LLAMA_FTYPE_MOSTLY_Q4_K_M``, or a ValueError naming the choices."""
    import llama_cpp

    prefix = "LLAMA_FTYPE_MOSTLY_"
    value = getattr(llama_cpp, prefix + quant.upper(), None)
    if not isinstance(value, int):
        known = sorted(n[len(prefix) :] for n in dir(llama_cpp) if n.startswith(prefix))
        raise ValueError(f"unknown quantization {quant!r}; llama.cpp knows {', '.join(known)}")
    return value


_TENSOR_COUNTER = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")
# ggml.h's enum ggml_log_level (DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5). llama-cpp-python's
# _logger.py still maps the older numbering (INFO 1, WARN 2, ERROR 3), so don't copy that.
_GGML_LOG_WARN, _GGML_LOG_ERROR = 3, 4


def quantize(
    src: Path, dst: Path, quant: str = "Q4_K_M", *, progress: Progress | None = None
) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer, atomically, reporting per-tensor progress.

    ``quant`` is a llama_ftype suffix (Q4_K_M, Q8_0, ...). llama.cpp's logger is process-global:
    ours is installed only for the call and the previous one (llama-cpp-python's, or the
    application's) is put back afterwards; llama.cpp's warnings go to ``logging``.
    """
    import llama_cpp

    say = progress or _quiet
    last = [-1]

    def on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        match = _TENSOR_COUNTER.search(text or b"")
        if match:
            i, n = int(match[1]), int(match[2])
            if i == n or i * 10 // n > last[0]:
                last[0] = i * 10 // n
                say(f"{i}/{n} tensors quantized")
        elif level in (_GGML_LOG_WARN, _GGML_LOG_ERROR):
            log.warning("llama.cpp: %s", (text or b"").decode(errors="replace").rstrip())

    callback = llama_cpp.llama_log_callback(on_log)  # kept referenced until restored below
    prev_cb, prev_ud = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(prev_cb), ctypes.byref(prev_ud))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _llama_ftype(quant)
    params.nthread = os.cpu_count() or 0
    dst = Path(dst)
    with _temp_path(dst, ".tmp") as tmp:
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        try:
            rc = llama_cpp.llama_model_quantize(
                os.fsencode(src), os.fsencode(tmp), ctypes.byref(params)
            )
        finally:
            llama_cpp.llama_log_set(prev_cb, prev_ud)
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({src}, {quant}) failed with code {rc}")
        os.replace(tmp, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgevoice.devtools.gguf_model",
        description="Write random-weight Gemma GGUF files for tests and benchmarks.",
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    tiny = sub.add_parser("tiny", help="tiny test model (ms to load, gibberish out)")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--arch", choices=("gemma2", "gemma4"), default="gemma2",
                      help="Gemma 2 layout, or Gemma 4's (per-layer embeddings, shared KV)")
    twin = sub.add_parser("twin", help="a real model's exact shapes, for speed benchmarks "
                                       "(minutes)")
    twin.add_argument("out", type=Path)
    twin.add_argument("--shape", choices=TWIN_SHAPES, default="gemma-2-2b",
                      help="whose shapes: Gemma 2 2B or Gemma 4 E2B")
    twin.add_argument("--quant", default="Q4_K_M", help="llama.cpp type, e.g. Q4_K_M, Q8_0, F16")
    args = parser.parse_args(argv)

    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    if args.kind == "tiny":
        if args.arch == "gemma4":
            from edgevoice.devtools.gguf_gemma4 import write_tiny_gemma4

            out = write_tiny_gemma4(args.out, seed=args.seed)
        else:
            out = write_tiny_gemma2(args.out, seed=args.seed)
        progress(f"wrote {out} ({out.stat().st_size} bytes)")
    else:
        try:
            write_twin(args.out, args.shape, quant=args.quant, progress=progress)
        except ValueError as exc:  # a bad --quant: one sentence, no traceback
            parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
