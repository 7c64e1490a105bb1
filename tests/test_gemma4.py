"""Gemma 4 in llama.cpp: the generated model's structure, its chat template, the KV prefix across
turns, speculative prefill and the thought channel.

They run a tiny random Gemma 4 (arch ``gemma4`` with per-layer embeddings, the 4:1 sliding
pattern and shared-KV layers) that carries a Gemma 4 chat template; they check structure and
token sequences exactly, never content (the model says gibberish).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgevoice.config import LlmConfig
from edgevoice.devtools import gguf_gemma4 as g4
from edgevoice.llm import Conversation
from edgevoice.llm.chat_template import ChatTemplate
from edgevoice.llm.thoughts import ThoughtFilter, ThoughtMarkers

gguf = pytest.importorskip("gguf", reason="gguf is not installed (pip install -e '.[test]')")
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

SYSTEM = "You are a helpful voice assistant."
QUESTIONS = ["hello what time is it", "turn on the lights please", "can you play music",
             "thanks good morning", "what is the weather today"]
PREFILL = "<|channel>thought\n<channel|>"
USER_TURN = "<turn|>\n<|turn>user\n{}<turn|>\n<|turn>model\n" + PREFILL


def make_target(model: Path, **overrides):
    from edgevoice.llm.llama_target import LlamaCppTarget

    values = {"model": str(model), "n_ctx": 2048, "max_tokens": 24, "threads": 1,
              "system_prompt": SYSTEM, **overrides}
    return LlamaCppTarget(LlmConfig(**values), seed=7)


@pytest.fixture
def target(tiny_gemma4_gguf: Path):
    t = make_target(tiny_gemma4_gguf)
    t.warm_up()
    yield t
    t.close()


def tokenize(target, text: str) -> list[int]:
    return target._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def run(target, messages) -> tuple[str, object, tuple[int, ...]]:
    text = "".join(target.stream(messages, threading.Event()))
    return text, target.last_stats, target.last_reply_tokens


# -- the file ----------------------------------------------------------------------------------


def test_the_tiny_model_has_gemma4s_architecture_features(tiny_gemma4_gguf: Path) -> None:
    reader = gguf.GGUFReader(tiny_gemma4_gguf)
    tensors = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    shape = g4.GEMMA4_TINY_SHAPE

    def field(key: str):
        return reader.fields[key].contents()

    assert field("general.architecture") == "gemma4"
    assert field("gemma4.attention.shared_kv_layers") == shape.n_kv_shared_layers == 5
    assert field("gemma4.embedding_length_per_layer_input") == shape.n_embd_per_layer
    assert field("gemma4.attention.sliding_window_pattern") == [
        True, True, True, True, False] * 2
    ff = field("gemma4.feed_forward_length")
    assert ff == [96] * 5 + [192] * 5  # double-wide MLPs in the shared-KV layers
    assert field("gemma4.attention.key_length") == 32  # full layers' heads are twice as wide
    assert field("gemma4.attention.key_length_swa") == 16
    # Per-layer embeddings: one table for all layers, and a gate and projection in each.
    n_vocab = len(field("tokenizer.ggml.tokens"))
    assert tensors["per_layer_token_embd.weight"] == (8 * 10, n_vocab)
    assert {"blk.9.inp_gate.weight", "blk.9.proj.weight", "blk.9.post_norm.weight"} <= set(tensors)
    # Layers 5..9 read the KV cache of layers 3 (sliding) and 4 (full): no K/V of their own.
    assert "blk.4.attn_k.weight" in tensors and "blk.5.attn_k.weight" not in tensors
    assert tensors["blk.4.attn_q.weight"] == (64, 2 * 32)
    assert tensors["blk.3.attn_q.weight"] == (64, 2 * 16)
    assert field("tokenizer.chat_template") == g4.GEMMA4_CHAT_TEMPLATE


def test_the_e2b_shape_has_e2bs_published_parameter_counts() -> None:
    specs = list(g4.tensor_specs(g4.GEMMA4_E2B_SHAPE, 262144))

    def count(names) -> float:
        total = 0
        for _name, shape in names:
            n = 1
            for dim in shape:
                n *= dim
            total += n
        return total / 1e9

    everything = count(specs)
    effective = count(s for s in specs if s[0] != "per_layer_token_embd.weight")
    # "2.3B effective parameters, 5.1B with embeddings" (the 5.1B also counts the vision and
    # audio encoders, about 0.45B, which a text GGUF does not carry).
    assert 2.25 < effective < 2.35
    assert 4.55 < everything < 4.7


def test_llama_cpp_loads_and_runs_it(tiny_gemma4_gguf: Path) -> None:
    llm = llama_cpp.Llama(model_path=str(tiny_gemma4_gguf), n_ctx=256, verbose=False,
                          swa_full=True)
    try:
        assert llama_cpp.llama_model_n_swa(llm.model) == g4.GEMMA4_TINY_SHAPE.sliding_window
        tokens = llm.tokenize(b"<|turn>user\nhello<turn|>\n", add_bos=True, special=True)
        assert tokens[:2] == [2, llm.tokenize(b"<|turn>", add_bos=False, special=True)[0]]
        out = []
        for token in llm.generate(tokens, temp=0.7):
            out.append(token)
            if len(out) == 20:
                break
        assert len(set(out)) > 3  # it writes varied pieces, not one token over and over
    finally:
        llm.close()


# -- the chat template -------------------------------------------------------------------------


def template_of(model: Path, **options) -> ChatTemplate:
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, verbose=False)
    try:
        return ChatTemplate(llm.metadata["tokenizer.chat_template"], bos_token="<bos>",
                            eos_token="<eos>", **options)
    finally:
        llm.close()


def test_the_system_role_is_a_real_system_turn_and_thinking_is_off(
        tiny_gemma4_gguf: Path) -> None:
    template = template_of(tiny_gemma4_gguf)
    assert template.supports_system  # no folding into the first user turn
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    assert template.render(messages) == (
        f"<bos><|turn>system\n{SYSTEM}<turn|>\n<|turn>user\nhi<turn|>\n<|turn>model\n{PREFILL}")
    assert template.stable_prefix(SYSTEM) == f"<bos><|turn>system\n{SYSTEM}<turn|>\n<|turn>user\n"
    thinking = template_of(tiny_gemma4_gguf, thinking=True)
    assert thinking.render(messages) == (
        f"<bos><|turn>system\n<|think|>{SYSTEM}<turn|>\n<|turn>user\nhi<turn|>\n<|turn>model\n")
    assert thinking.reply_prefill == ""


def test_history_replies_are_said_behind_the_prefill_they_were_generated_after(
        tiny_gemma4_gguf: Path) -> None:
    template = template_of(tiny_gemma4_gguf)
    assert (template.reply_header, template.reply_prefill) == ("<|turn>model\n", PREFILL)
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    later = [*first, {"role": "assistant", "content": "Hello there."},
             {"role": "user", "content": "bye"}]
    # Each prompt starts with the previous prompt followed by the reply: a byte-stable prefix.
    assert template.render(later).startswith(template.render(first) + "Hello there.<turn|>\n")
    segments = template.segments(later)
    assert segments is not None and segments.replies == ("Hello there.",)
    assert segments.text == template.render(later)


def test_thoughts_in_a_history_reply_are_not_rendered(tiny_gemma4_gguf: Path) -> None:
    template = template_of(tiny_gemma4_gguf)
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "<|channel>thought\nhmm<channel|>Hello."},
                {"role": "user", "content": "bye"}]
    text = template.render(messages)
    assert "hmm" not in text and f"<|turn>model\n{PREFILL}Hello.<turn|>" in text


def test_llama_cpp_python_renders_it_thinking_off_and_ignores_template_kwargs(
        tiny_gemma4_gguf: Path) -> None:
    # Llama() swallows unknown keywords: chat_template_kwargs does not reach the template, so
    # its own create_chat_completion always renders with enable_thinking undefined (= off).
    llm = llama_cpp.Llama(model_path=str(tiny_gemma4_gguf), n_ctx=256, verbose=False,
                          chat_template_kwargs={"enable_thinking": True})
    try:
        assert llm.chat_format == "chat_template.default"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
        result = llm.create_chat_completion(messages=messages, max_tokens=1)
        off = template_of(tiny_gemma4_gguf).render(messages).encode()
        expected = len(llm.tokenize(off, add_bos=False, special=True))
        assert result["usage"]["prompt_tokens"] == expected
    finally:
        llm.close()


# -- the KV cache across turns ----------------------------------------------------------------


def test_each_turn_evaluates_only_the_new_user_turn(target) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    previous: list[int] = []
    reply_ids: tuple[int, ...] = ()
    for i, question in enumerate(QUESTIONS):
        messages = conv.messages_for(question)
        tokens = target.prompt_tokens(messages)
        reply, stats, new_ids = run(target, messages)
        assert stats.finish_reason == "length"
        if i:
            user_turn = tokenize(target, USER_TURN.format(question))
            assert tokens[: len(previous)] == previous  # the last prompt, byte for byte ...
            # ... then the reply as its generated ids (a trailing space is trimmed away) ...
            spliced = tokens[len(previous): len(tokens) - len(user_turn)]
            assert spliced == list(reply_ids[: len(spliced)])
            assert len(spliced) >= len(reply_ids) - 1
            assert tokens[len(tokens) - len(user_turn):] == user_turn  # ... and the new turn
            assert stats.evaluated_tokens <= len(user_turn) + 1
        previous, reply_ids = tokens, new_ids
        conv.commit(question, reply)


def test_without_the_prefill_in_the_history_every_turn_re_reads_the_reply(target) -> None:
    evaluated = {}
    for name, prefill in (("fixed", target._template.reply_prefill), ("plain", "")):
        target._template.reply_prefill = prefill  # "plain": the template's own rendering
        target._llm.reset()
        conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
        counts = []
        for question in QUESTIONS[:3]:
            reply, stats, _ = run(target, conv.messages_for(question))
            counts.append(stats.evaluated_tokens)
            conv.commit(question, reply)
        evaluated[name] = counts[1:]
    for question, fixed, plain in zip(QUESTIONS[1:], evaluated["fixed"], evaluated["plain"],
                                      strict=False):
        user_turn = len(tokenize(target, USER_TURN.format(question)))
        assert fixed <= user_turn + 1 < plain


def test_speculative_prefill_leaves_one_token_for_the_answer(target) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    for question in QUESTIONS[:3]:
        messages = conv.messages_for(question)
        assert target.prefill(messages, threading.Event()) > 0
        reply, stats, _ = run(target, messages)
        assert stats.evaluated_tokens == 1 and stats.cached_tokens == stats.prompt_tokens - 1
        conv.commit(question, reply)


# -- the thought channel ----------------------------------------------------------------------


def test_the_filter_drops_markers_and_what_is_between_them() -> None:
    f = ThoughtFilter(ThoughtMarkers(open_id=7, close_id=8))
    spoken = [t for t in [5, 7, 1, 2, 8, 3, 8, 4, 7, 9] if f.speak(t)]
    assert spoken == [5, 3, 4] and f.inside and f.thought_tokens == 7
    assert all(ThoughtFilter(None).speak(t) for t in (7, 8))  # a model without the channel


def test_thought_markers_never_reach_the_text_or_the_history(chatty_gemma4_gguf: Path) -> None:
    with make_target(chatty_gemma4_gguf, max_tokens=40) as target:
        markers = target._thought_markers
        assert markers is not None and target.describe().details["thought_channel"]
        conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
        opened = 0
        for question in QUESTIONS:
            deltas = list(target.stream(conv.messages_for(question), threading.Event()))
            ids = target.last_reply_tokens
            opened += ids.count(markers.open_id)
            for delta in deltas:
                assert g4.THOUGHT_OPEN not in delta and g4.THOUGHT_CLOSE not in delta
            # What is said is exactly the tokens outside the channel.
            f = ThoughtFilter(markers)
            outside = b"".join(target.token_bytes(t) for t in ids if f.speak(t))
            assert "".join(deltas) == outside.decode("utf-8", "ignore").lstrip()
            conv.commit(question, "".join(deltas))
        assert opened >= 3  # the model did write thoughts: the check above had work to do
        for _question, reply in conv.pairs:
            assert "<|channel>" not in reply and "<channel|>" not in reply


# -- the command line --------------------------------------------------------------------------


def test_the_command_line_writes_a_tiny_gemma4_and_refuses_an_unknown_shape(
        tmp_path: Path, capsys) -> None:
    from edgevoice.devtools import gguf_model

    assert gguf_model.main(["tiny", str(tmp_path / "t.gguf"), "--arch", "gemma4"]) == 0
    assert gguf.GGUFReader(tmp_path / "t.gguf").fields["general.architecture"].contents() == \
        "gemma4"
    with pytest.raises(SystemExit) as exc:
        gguf_model.main(["twin", str(tmp_path / "x.gguf"), "--shape", "gemma-9"])
    assert exc.value.code == 2 and "gemma-4-e2b" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gguf_model.main(["twin", str(tmp_path / "x.gguf"), "--quant", "Q9_BOGUS"])
    assert "unknown quantization" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()
