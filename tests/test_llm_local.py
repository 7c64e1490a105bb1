"""The local llama.cpp target and the conversation history, on a tiny random Gemma 2 GGUF.

The tiny model says gibberish: these tests assert structure (token accounting, KV-cache reuse,
cancellation, errors, silence on stdout/stderr), never content.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevoice.config import LlmConfig
from edgevoice.errors import ConfigError, ModelError
from edgevoice.llm import ChatTarget, Conversation, PrefixCachingTarget, StreamStats, TargetError
from edgevoice.llm.chat_template import ChatTemplate, ChatTemplateError
from edgevoice.llm.history import EMPTY_REPLY, TRUNCATION_MARK
from edgevoice.llm.llama_target import (
    LlamaCppTarget,
    Utf8Pieces,
    check_model_file,
    default_threads,
    resolve_gpu_layers,
    threads_for,
)

pytest.importorskip("llama_cpp")

SYSTEM = "You are a helpful voice assistant."
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_target(model: Path, **overrides) -> LlamaCppTarget:
    values = {"model": str(model), "n_ctx": 1024, "max_tokens": 24, "threads": 1,
              "system_prompt": SYSTEM, **overrides}
    n_batch = values.pop("n_batch", 512)
    return LlamaCppTarget(LlmConfig(**values), seed=7, n_batch=n_batch)


@pytest.fixture
def target(tiny_gguf: Path):
    t = make_target(tiny_gguf)
    yield t
    t.close()


def run(target: LlamaCppTarget, messages, cancel: threading.Event | None = None):
    deltas = list(target.stream(messages, cancel or threading.Event()))
    stats = target.last_stats
    assert stats is not None
    return deltas, stats


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def native_prompt_evals(target: LlamaCppTarget) -> int:
    """llama.cpp's own count of tokens decoded in multi-token (prompt) batches.

    llama.cpp reports max(1, count), so differences are exact only once it is above 1, and it
    books queued work at the next synchronization, so we synchronize first.
    """
    import llama_cpp

    llama_cpp.llama_synchronize(target._llm.ctx)
    return llama_cpp.llama_perf_context(target._llm.ctx).n_p_eval


class TripEvent(threading.Event):
    """An Event that reports itself set from its ``after``-th check on (deterministic abort)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.checks = after, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.after or super().is_set()


# -- streaming and description -----------------------------------------------------------------


def test_stream_yields_text_deltas_lazily_and_records_stats(target: LlamaCppTarget) -> None:
    assert isinstance(target, ChatTarget) and isinstance(target, PrefixCachingTarget)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "hello what time is it"}]
    iterator = target.stream(messages, threading.Event())
    assert target.last_stats is None  # nothing ran yet: the work happens while iterating
    deltas = list(iterator)
    stats = target.last_stats
    assert deltas and all(isinstance(d, str) and d for d in deltas)
    assert not deltas[0][0].isspace()
    assert stats.prompt_tokens == target.count_tokens(messages)
    assert stats.cached_tokens + stats.evaluated_tokens == stats.prompt_tokens
    assert 1 <= stats.completion_tokens <= 24
    assert stats.finish_reason in ("stop", "length")
    assert stats.first_token_ms is not None and 0 < stats.first_token_ms <= stats.total_ms


def test_describe_reports_device_and_context(target: LlamaCppTarget) -> None:
    info = target.describe()
    assert (info.name, info.kind, info.model) == ("local", "local", target._path.name)
    assert info.device == "cpu"  # this llama.cpp build has no GPU backend
    assert info.details["n_ctx"] == 1024
    assert info.details["threads"] == 1
    assert info.details["supports_gpu_offload"] is False
    assert info.details["gpu_layers"] == 0
    assert info.details["system_prompt"] == "folded"


def test_thread_count_and_gpu_layer_resolution() -> None:
    assert default_threads() >= 1
    # The audio path keeps a core, but not one of only two (the model then takes both).
    assert [threads_for(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 2, 3, 7]
    assert resolve_gpu_layers("auto", True) == -1
    assert resolve_gpu_layers("auto", False) == 0
    assert resolve_gpu_layers(12, True) == 12
    assert resolve_gpu_layers(12, False) == 0


def test_turn_is_logged_with_token_accounting(target: LlamaCppTarget, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edgevoice.llm.llama_target")
    run(target, [{"role": "user", "content": "hi"}])
    stats = target.last_stats
    assert (f"prompt {stats.prompt_tokens} tokens, {stats.cached_tokens} cached, "
            f"{stats.evaluated_tokens} evaluated") in caplog.text


# -- KV-cache prefix reuse --------------------------------------------------------------------


def test_each_turn_evaluates_only_the_new_suffix(target: LlamaCppTarget) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    previous_prompt: list[int] = []
    for i, text in enumerate(["hello what time is it", "turn on the lights please",
                              "can you play music", "thanks good morning"]):
        messages = conv.messages_for(text)
        tokens = target.prompt_tokens(messages)
        in_cache = target.kv_tokens
        predicted = target.prompt_cost(messages)
        native_before = native_prompt_evals(target)
        deltas, stats = run(target, messages)

        expected_cached = min(common_prefix(in_cache, tokens), len(tokens) - 1)
        assert stats.prompt_tokens == len(tokens)
        assert stats.cached_tokens == expected_cached == predicted.cached_tokens
        assert stats.evaluated_tokens == len(tokens) - expected_cached
        if stats.evaluated_tokens > 1 and native_before > 1:  # llama.cpp's own count agrees
            assert native_prompt_evals(target) - native_before == stats.evaluated_tokens
        if i:
            # The previous prompt is a token prefix of this one and stays cached ...
            assert tokens[: len(previous_prompt)] == previous_prompt
            assert stats.cached_tokens >= len(previous_prompt)
            # ... so only the last reply's unmatched tail and the new user turn are evaluated.
            assert stats.evaluated_tokens < stats.prompt_tokens / 2
        previous_prompt = tokens
        conv.commit(text, "".join(deltas))


def test_prefill_ahead_leaves_one_token_for_the_turn_and_the_same_reply(
        tiny_gguf: Path) -> None:
    # Speculation: the words heard before a pause go into the KV cache while the endpointer
    # still waits; the turn then evaluates one token and answers exactly as without it.
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "what is the weather like in paris today"}]
    with make_target(tiny_gguf, temperature=0.0) as cold:
        cold.warm_up()
        plain, plain_stats = run(cold, messages)
    with make_target(tiny_gguf, temperature=0.0) as target:
        target.warm_up()
        tokens = target.prompt_tokens(messages)
        cached = common_prefix(target.kv_tokens, tokens)
        assert cached > 0                                   # the warm-up's system prefix
        native_before = native_prompt_evals(target)
        ahead = target.prefill(messages, threading.Event())
        assert ahead == len(tokens) - 1 - cached > 0
        assert native_prompt_evals(target) - native_before == ahead  # llama.cpp did the work
        deltas, stats = run(target, messages)
        assert stats.evaluated_tokens == 1 < plain_stats.evaluated_tokens
        assert deltas == plain


def test_prefill_of_other_words_keeps_the_shared_prefix(target: LlamaCppTarget) -> None:
    # The user went on after the pause: the turn re-evaluates only from where the words differ.
    target.warm_up()
    heard = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "what time is it"}]
    final = [heard[0], {"role": "user", "content": "what time is it in tokyo"}]
    target.prefill(heard, threading.Event())
    shared = common_prefix(target.prompt_tokens(heard), target.prompt_tokens(final))
    _, stats = run(target, final)
    assert stats.cached_tokens == shared
    assert stats.evaluated_tokens == stats.prompt_tokens - shared


def test_prefill_cancelled_before_it_starts_evaluates_nothing(target: LlamaCppTarget) -> None:
    target.warm_up()
    before = target.kv_tokens
    cancel = threading.Event()
    cancel.set()
    assert target.prefill([{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": "hello there"}], cancel) == 0
    assert target.kv_tokens == before


def test_prompt_text_is_byte_stable_across_turns(target: LlamaCppTarget) -> None:
    template = target._template
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    first = template.render(conv.messages_for("hello"))
    conv.commit("hello", "hi there")
    second = template.render(conv.messages_for("what time is it"))
    assert second.startswith(first)
    assert first.startswith("<bos><start_of_turn>user\n" + SYSTEM + "\n\nhello")


def test_warm_up_leaves_only_the_user_text_for_the_first_turn(target: LlamaCppTarget) -> None:
    target.warm_up()
    warmed = target.kv_tokens
    assert len(warmed) > 10
    assert target.describe().details["warm_up_ms"] is not None
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "what time is it"}]
    tokens = target.prompt_tokens(messages)
    assert tokens[: len(warmed)] == warmed
    _, stats = run(target, messages)
    assert stats.cached_tokens == len(warmed)
    evaluated_text = b"".join(target.token_bytes(t) for t in tokens[len(warmed):]).decode()
    assert evaluated_text.startswith("what time is it")
    assert stats.evaluated_tokens == len(tokens) - len(warmed)
    in_cache = target.kv_tokens
    target.warm_up()  # idempotent: keeps the conversation that starts with the prefix
    assert target.kv_tokens == in_cache


# -- chat template: Gemma 2 rejects the system role --------------------------------------------


def test_gemma2_template_gets_the_system_prompt_folded_in(target: LlamaCppTarget) -> None:
    template = target._template
    assert template.supports_system is False
    with pytest.raises(ChatTemplateError):  # what the raw template does with a system role
        template._render_raw([{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": "hi"}])
    prompt = template.render([{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hello"},
                              {"role": "user", "content": "bye"}])
    assert prompt == (f"<bos><start_of_turn>user\n{SYSTEM}\n\nhi<end_of_turn>\n"
                      "<start_of_turn>model\nhello<end_of_turn>\n"
                      "<start_of_turn>user\nbye<end_of_turn>\n<start_of_turn>model\n")
    assert template.stable_prefix(SYSTEM) == f"<bos><start_of_turn>user\n{SYSTEM}\n\n"
    _, stats = run(target, [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "hi"}])
    assert stats.finish_reason in ("stop", "length")


def test_template_with_a_system_role_keeps_it() -> None:
    template = ChatTemplate(CHATML, bos_token="<s>", eos_token="</s>")
    assert template.supports_system is True
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert template.render(messages).startswith("<|im_start|>system\nS<|im_end|>")
    assert template.stable_prefix("S") == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"


def test_roles_that_do_not_alternate_are_a_value_error(target: LlamaCppTarget) -> None:
    with pytest.raises(ValueError):
        list(target.stream([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                           threading.Event()))


# -- cancellation ------------------------------------------------------------------------------


def test_cancel_between_tokens_stops_and_leaves_the_context_usable(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, max_tokens=200) as target:
        messages = [{"role": "user", "content": "hello"}]
        cancel = threading.Event()
        deltas = []
        for delta in target.stream(messages, cancel):
            deltas.append(delta)
            cancel.set()
        stats = target.last_stats
        assert stats.finish_reason == "cancelled"
        assert len(deltas) == 1 and stats.completion_tokens <= 3
        # The next turn works and reuses the whole prompt of the cancelled one.
        next_messages = [*messages, {"role": "assistant", "content": deltas[0]},
                         {"role": "user", "content": "again"}]
        more, again = run(target, next_messages)
        assert more and again.finish_reason in ("stop", "length")
        assert again.cached_tokens >= stats.prompt_tokens


def test_reply_prefix_is_continued_not_repeated(target: LlamaCppTarget) -> None:
    messages = [{"role": "user", "content": "hello"}]
    plain = target.prompt_tokens(messages)
    continued = target.prompt_tokens(messages, "the weather today is")
    assert continued[: len(plain)] == plain and len(continued) > len(plain)
    _, first = run(target, messages)
    deltas = list(target.stream(messages, threading.Event(), reply_prefix="the weather today is"))
    stats = target.last_stats
    assert deltas and stats.prompt_tokens == len(continued)
    assert stats.cached_tokens >= len(plain) - 1  # the conversation so far stays cached


def test_closing_the_stream_counts_as_cancelled(target: LlamaCppTarget) -> None:
    iterator = target.stream([{"role": "user", "content": "hello"}], threading.Event())
    next(iterator)
    iterator.close()
    assert target.last_stats.finish_reason == "cancelled"


def test_cancel_set_before_the_call_evaluates_nothing(target: LlamaCppTarget) -> None:
    cancel = threading.Event()
    cancel.set()
    before = target.kv_tokens
    deltas, stats = run(target, [{"role": "user", "content": "hello"}], cancel)
    assert deltas == [] and stats.finish_reason == "cancelled"
    assert (stats.evaluated_tokens, stats.completion_tokens) == (0, 0)
    assert target.kv_tokens == before


def long_messages(words: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": " ".join(["what time is it today"] * (words // 5))}]


def test_cancel_during_prefill_aborts_and_keeps_finished_batches(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, n_ctx=2048, n_batch=64) as target:
        target.warm_up()
        warmed = len(target.kv_tokens)
        messages = long_messages(500)
        cancel = TripEvent(after=200)  # trips inside the abort callback, mid-prefill
        deltas, stats = run(target, messages, cancel)
        assert deltas == [] and stats.finish_reason == "cancelled"
        assert stats.first_token_ms is None and stats.completion_tokens == 0
        assert stats.cached_tokens == warmed
        assert 0 < stats.evaluated_tokens < stats.prompt_tokens - warmed
        assert stats.evaluated_tokens % 64 == 0  # whole batches only
        assert len(target.kv_tokens) == warmed + stats.evaluated_tokens

        # The next call works and reuses what the aborted one finished.
        native_before = native_prompt_evals(target)
        deltas, again = run(target, messages)
        assert deltas and again.finish_reason in ("stop", "length")
        assert again.cached_tokens == warmed + stats.evaluated_tokens
        assert again.evaluated_tokens == again.prompt_tokens - again.cached_tokens
        assert native_prompt_evals(target) - native_before == again.evaluated_tokens


def test_cancel_from_another_thread_interrupts_a_long_prefill(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, n_ctx=4096) as target:
        messages = long_messages(2800)
        cancel = threading.Event()
        inside = threading.Event()

        class Observed(threading.Event):  # tells the other thread when prefill is under way
            def is_set(self) -> bool:
                inside.set()
                return cancel.is_set()

        def canceller() -> None:
            inside.wait(5)
            cancel.set()

        thread = threading.Thread(target=canceller)
        thread.start()
        deltas, stats = run(target, messages, Observed())
        thread.join()
        assert deltas == [] and stats.finish_reason == "cancelled"
        assert stats.first_token_ms is None  # stopped inside the prefill, not after it
        assert stats.evaluated_tokens < stats.prompt_tokens
        _, again = run(target, messages[:1] + [{"role": "user", "content": "hi"}])
        assert again.finish_reason in ("stop", "length")


# -- limits and errors -------------------------------------------------------------------------


def test_prompt_longer_than_the_context_is_a_target_error(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, n_ctx=256) as target:
        with pytest.raises(TargetError, match="does not fit"):
            list(target.stream(long_messages(400), threading.Event()))
        assert target.last_stats.finish_reason == "error"
        _, stats = run(target, [{"role": "user", "content": "hi"}])  # still usable
        assert stats.finish_reason in ("stop", "length")


def test_reply_stops_at_max_tokens(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, max_tokens=5, temperature=0.0) as target:
        _, stats = run(target, [{"role": "user", "content": "hello"}])
        assert stats.completion_tokens <= 5
        assert stats.finish_reason in ("stop", "length")


def test_closed_target_refuses_work(tiny_gguf: Path) -> None:
    target = make_target(tiny_gguf)
    target.close()
    target.close()
    with pytest.raises(TargetError, match="closed"):
        target.stream([{"role": "user", "content": "hi"}], threading.Event())


def test_missing_model_error_names_the_path_and_how_to_get_one(tmp_path: Path) -> None:
    missing = tmp_path / "gemma.gguf"
    with pytest.raises(ModelError) as err:
        LlamaCppTarget(LlmConfig(model=str(missing)))
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert "gemma-2-2b-it" in message and "llm.model" in message and "--llm-model" in message
    with pytest.raises(ModelError, match="no local language model is configured"):
        check_model_file(None)
    with pytest.raises(ModelError, match="is a folder"):
        check_model_file(tmp_path)


def test_non_gguf_file_is_named_in_the_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelError, match="is not a GGUF file") as err:
        LlamaCppTarget(LlmConfig(model=str(bogus)))
    assert str(bogus) in str(err.value)


def test_corrupt_gguf_is_named_with_llamas_reason(tmp_path: Path, tiny_gguf: Path,
                                                  capfd) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:5000])  # the header survives, tensors don't
    with pytest.raises(ModelError) as err:
        LlamaCppTarget(LlmConfig(model=str(broken)))
    assert str(broken) in str(err.value) and "cannot load" in str(err.value)
    assert "(llama.cpp: " in str(err.value)  # llama.cpp's own reason, without log prefixes
    out, errout = capfd.readouterr()
    assert (out, errout) == ("", "")


# -- silence on stdout/stderr; native logs in logging ------------------------------------------


def test_construction_and_turns_print_nothing(tiny_gguf: Path, capfd, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="edgevoice.llama_cpp")
    with make_target(tiny_gguf) as target:
        target.warm_up()
        run(target, [{"role": "user", "content": "hello"}])
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    native = [r for r in caplog.records if r.name == "edgevoice.llama_cpp"]
    assert any("llama_model_loader" in r.getMessage() for r in native)
    assert all(r.levelno == logging.DEBUG for r in native)


def test_first_load_in_a_fresh_process_prints_nothing(tiny_gguf: Path) -> None:
    code = textwrap.dedent(f"""
        from edgevoice.config import LlmConfig
        from edgevoice.llm.llama_target import LlamaCppTarget
        t = LlamaCppTarget(LlmConfig(model={str(tiny_gguf)!r}, n_ctx=512))
        t.warm_up()
        t.close()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert (result.stdout, result.stderr) == (b"", b"")


# -- UTF-8 pieces ------------------------------------------------------------------------------


def test_a_character_split_across_byte_tokens_comes_out_whole(target: LlamaCppTarget) -> None:
    tokens = target._llm.tokenize("é!".encode(), add_bos=False, special=False)
    pieces = [target.token_bytes(t) for t in tokens]
    assert pieces[:2] == [b"\xc3", b"\xa9"]  # byte-fallback tokens: one byte each
    text = Utf8Pieces()
    assert [text.push(p) for p in pieces] == ["", "é", "!"]


@given(st.text(), st.lists(st.integers(min_value=1, max_value=5), max_size=50))
def test_utf8_pieces_reassemble_any_text(text: str, cuts: list[int]) -> None:
    data = text.encode()
    chunks, i = [], 0
    for n in cuts:
        chunks.append(data[i:i + n])
        i += n
    chunks.append(data[i:])
    out = Utf8Pieces()
    assert "".join(out.push(c) for c in chunks) + out.flush() == text.lstrip()


# -- conversation history ----------------------------------------------------------------------


def word_count(messages) -> int:
    """A stand-in tokenizer: 4 tokens of template per message plus one per word."""
    return sum(4 + len(m["content"].split()) for m in messages)


def check_shape(messages, system: str) -> None:
    assert messages[0] == {"role": "system", "content": system}
    roles = [m["role"] for m in messages[1:]]
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=30),
       st.integers(60, 300))
def test_history_always_fits_and_alternates(turns, budget) -> None:
    conv = Conversation("be brief", budget, word_count)
    previous = None
    for n, (user_words, reply_words) in enumerate(turns):
        user = " ".join(f"u{n}w{i}" for i in range(user_words))
        reply = " ".join(f"a{n}w{i}" for i in range(reply_words))
        before = len(conv.pairs)
        messages = conv.messages_for(user)
        check_shape(messages, "be brief")
        assert word_count(messages) <= budget
        if previous is not None and len(conv.pairs) == before:  # not trimmed: append-only
            assert messages[: len(previous)] == previous
        conv.commit(user, reply)
        stored_user, stored_reply = conv.pairs[-1]
        assert stored_user == messages[-1]["content"]  # committed exactly as prompted
        assert stored_reply == (reply if reply.strip() else EMPTY_REPLY)
        previous = messages[:-1] + [
            {"role": "user", "content": stored_user},
            {"role": "assistant", "content": stored_reply},
        ]


def test_trimming_drops_oldest_pairs_with_hysteresis() -> None:
    conv = Conversation("sys", 100, word_count, trim_to=0.5)
    for i in range(8):
        conv.commit(f"question {i} " + "w " * 5, f"answer {i} " + "w " * 5)
    messages = conv.messages_for("next question")
    check_shape(messages, "sys")
    assert word_count(messages) <= 50  # trimmed to the low-water mark, not just under 100
    kept = [m["content"] for m in messages[1::2]]
    assert kept[-1] == "next question" and kept[0].startswith("question 7")
    assert conv.messages_for("next question") == messages  # stable until the next trim


def test_too_long_user_text_keeps_its_end() -> None:
    conv = Conversation("sys", 40, word_count)
    conv.commit("hi", "hello")
    text = " ".join(f"w{i}" for i in range(100))
    messages = conv.messages_for(text)
    check_shape(messages, "sys")
    assert word_count(messages) <= 40
    assert messages[-1]["content"].startswith(TRUNCATION_MARK.strip())
    assert messages[-1]["content"].endswith("w98 w99")
    conv.commit(text, "ok")
    assert conv.pairs[-1][0] == messages[-1]["content"]


def test_empty_reply_keeps_the_turn_with_a_placeholder() -> None:
    conv = Conversation("sys", 100, word_count)
    conv.commit("what is the", "")
    conv.commit("weather", "   ")
    assert conv.pairs == (("what is the", EMPTY_REPLY), ("weather", EMPTY_REPLY))
    check_shape(conv.messages_for("in paris"), "sys")


def test_system_prompt_that_leaves_no_room_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="llm.system_prompt"):
        Conversation(" ".join(["word"] * 50), 30, word_count)


def test_history_with_the_real_tokenizer_fits_the_context(tiny_gguf: Path) -> None:
    with make_target(tiny_gguf, n_ctx=512, max_tokens=16) as target:
        conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
        for i in range(12):
            text = f"turn {i} " + "what time is it today " * 6
            messages = conv.messages_for(text)
            check_shape(messages, SYSTEM)
            deltas, stats = run(target, messages)
            assert stats.prompt_tokens + stats.completion_tokens <= 512
            assert stats.finish_reason in ("stop", "length")
            conv.commit(text, "".join(deltas))
        assert 0 < len(conv.pairs) < 12  # trimmed along the way


def test_stream_stats_speed() -> None:
    stats = StreamStats(10, 5, 5, 11, 100.0, 1100.0, "stop")
    assert stats.tokens_per_s == pytest.approx(10.0)
    assert StreamStats(10, 5, 5, 1, 100.0, 100.0, "stop").tokens_per_s is None
