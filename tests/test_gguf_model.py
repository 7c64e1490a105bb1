"""The generated Gemma 2 GGUFs are real llama.cpp models: they load, tokenize, template, stream."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevoice.devtools import gguf_model
from edgevoice.devtools.gguf_model import (
    BOS_ID,
    GEMMA2_2B_SHAPE,
    GEMMA2_CHAT_TEMPLATE,
    build_vocab,
    tensor_specs,
)

pytest.importorskip("gguf", reason="gguf is not installed (test extra: pip install -e '.[test]')")
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def llm(tiny_gguf: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=512, verbose=False)
    yield model
    model.close()


def test_loads_as_gemma2_with_its_hyperparameters(llm: llama_cpp.Llama) -> None:
    meta = llm.metadata
    assert meta["general.architecture"] == "gemma2"
    assert meta["gemma2.attention.sliding_window"] == "4096"
    assert float(meta["gemma2.attn_logit_softcapping"]) == 50.0
    assert float(meta["gemma2.final_logit_softcapping"]) == 30.0
    assert llm.n_vocab() == len(build_vocab().tokens)
    assert "output.weight" not in dict(tensor_specs(gguf_model.TINY_SHAPE, llm.n_vocab()))


@pytest.mark.parametrize(
    "text",
    ["hello the weather today", "Hello world, turn on the lights!", "café ☃ 42\n\ttabs  spaces"],
)
def test_tokenize_round_trips(llm: llama_cpp.Llama, text: str) -> None:
    data = text.encode()
    tokens = llm.tokenize(data, add_bos=False)
    assert llm.detokenize(tokens) == data
    assert llm.tokenize(data, add_bos=True)[0] == BOS_ID


def test_word_pieces_merge(llm: llama_cpp.Llama) -> None:
    assert len(llm.tokenize(b" the weather", add_bos=False)) == 2  # "▁the", "▁weather"


def test_control_tokens_are_single_specials(llm: llama_cpp.Llama) -> None:
    assert len(llm.tokenize(b"<start_of_turn><end_of_turn>", add_bos=False, special=True)) == 2
    assert len(llm.tokenize(b"<end_of_turn>", add_bos=False, special=False)) > 1


def test_uses_the_gemma2_chat_template(llm: llama_cpp.Llama) -> None:
    assert llm.metadata["tokenizer.chat_template"] == GEMMA2_CHAT_TEMPLATE
    assert llm.chat_format == "chat_template.default"
    prompt = b"<bos><start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n"
    expected = len(llm.tokenize(prompt, add_bos=False, special=True))
    result = llm.create_chat_completion(messages=HELLO, max_tokens=1)
    assert result["usage"]["prompt_tokens"] == expected


def test_system_role_raises_like_real_gemma2(llm: llama_cpp.Llama) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    with pytest.raises(ValueError, match="System role not supported"):
        llm.create_chat_completion(messages=messages, max_tokens=1)


def test_roles_must_alternate_like_real_gemma2(llm: llama_cpp.Llama) -> None:
    with pytest.raises(ValueError, match="must alternate"):
        llm.create_chat_completion(messages=[*HELLO, *HELLO], max_tokens=1)


def test_chat_completion_streams_tokens(llm: llama_cpp.Llama) -> None:
    chunks = list(
        llm.create_chat_completion(
            messages=HELLO, max_tokens=16, stream=True, temperature=0.0, seed=0
        )
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(deltas) == 16 and all(deltas)
    # Specials and raw bytes are damped: the random model doesn't end its turn at once.
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_writes_are_reproducible_and_leave_no_temp_files(tmp_path: Path) -> None:
    a = gguf_model.write_tiny_gemma2(tmp_path / "a.gguf", seed=1)
    b = gguf_model.write_tiny_gemma2(tmp_path / "b.gguf", seed=1)
    c = gguf_model.write_tiny_gemma2(tmp_path / "c.gguf", seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]


def test_the_spaced_words_model_writes_words_a_clause_splitter_can_cut(tmp_path: Path) -> None:
    from edgevoice.tts.clauses import ClauseSplitter

    path = gguf_model.write_tiny_gemma2(tmp_path / "w.gguf", spaced_words=True)
    model = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False, seed=3)
    try:
        for question in ("hello", "what time is it", "turn on the lights please"):
            reply = model.create_chat_completion(
                [{"role": "user", "content": question}], max_tokens=24, temperature=1.0
            )["choices"][0]["message"]["content"]
            words = reply.split()
            assert len(words) >= 20, reply  # every token began a word
            clauses = ClauseSplitter(first_max_words=4).push(reply)
            assert clauses and len(clauses[0].split()) <= 4, (reply, clauses)
    finally:
        model.close()


def test_cli_writes_tiny(tmp_path: Path) -> None:
    assert gguf_model.main(["tiny", str(tmp_path / "t.gguf")]) == 0
    assert (tmp_path / "t.gguf").stat().st_size > 100_000


def test_twin_has_gemma2_2b_parameter_count() -> None:
    vocab = build_vocab(GEMMA2_2B_SHAPE.n_vocab)
    assert len(vocab.tokens) == len(set(vocab.tokens)) == 256_000
    n_params = 0
    for _, shape in tensor_specs(GEMMA2_2B_SHAPE, len(vocab.tokens)):
        size = 1
        for dim in shape:
            size *= dim
        n_params += size
    assert n_params == 2_614_341_888  # Gemma 2 2B's published count


def test_unknown_quantization_is_named() -> None:
    with pytest.raises(ValueError, match="Q4_K_M"):
        gguf_model.write_gemma2_2b_twin(Path("unused.gguf"), quant="Q3_FANCY")


def _log_callback() -> tuple[int | None, int | None]:
    callback, user_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(callback), ctypes.byref(user_data))
    return ctypes.cast(callback, ctypes.c_void_p).value, user_data.value


def test_quantize_gives_a_loadable_model_and_restores_logging(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    before = _log_callback()
    messages: list[str] = []
    out = gguf_model.quantize(tiny_gguf, tmp_path / "q8.gguf", "Q8_0", progress=messages.append)
    assert _log_callback() == before
    assert messages[-1] == "24/24 tensors quantized"
    assert out.stat().st_size < tiny_gguf.stat().st_size
    model = llama_cpp.Llama(model_path=str(out), n_ctx=128, verbose=False)
    try:
        assert model.create_completion("the", max_tokens=4)["usage"]["completion_tokens"] == 4
    finally:
        model.close()


def test_quantize_failure_raises_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(RuntimeError, match="llama_model_quantize"):
        gguf_model.quantize(bad, tmp_path / "out.gguf", "Q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]
