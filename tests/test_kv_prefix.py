"""The KV cache's prefix survives the reply: each turn evaluates only the new user turn.

A reply's text re-tokenizes into other ids than the ones generated (leading space dropped, other
segmentations), so a prompt built from the history's text differs from the KV cache from the
reply on and every turn re-reads it. The local target puts the generated ids where the history
reply is (``edgevoice.llm.reply_tokens``). These tests run the tiny random Gemma 2 GGUF with
Gemma 2's real chat template: they check token structure exactly, never content.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from edgevoice.config import LlmConfig
from edgevoice.llm import Conversation
from edgevoice.llm.chat_template import ChatTemplate
from edgevoice.llm.llama_target import LlamaCppTarget
from edgevoice.llm.reply_tokens import ReplyTokens

SYSTEM = "You are a helpful voice assistant."
QUESTIONS = ["hello what time is it", "turn on the lights please", "can you play music",
             "thanks good morning", "what is the weather today", "set a timer for ten minutes"]
GEMMA_USER_TURN = "<end_of_turn>\n<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_target(model: Path, **overrides) -> LlamaCppTarget:
    pytest.importorskip("llama_cpp")
    options = {k: overrides.pop(k) for k in ("keep_reply_tokens",) if k in overrides}
    values = {"model": str(model), "n_ctx": 2048, "max_tokens": 24, "threads": 1,
              "system_prompt": SYSTEM, **overrides}
    return LlamaCppTarget(LlmConfig(**values), seed=7, **options)


@pytest.fixture
def target(tiny_gguf: Path):
    t = make_target(tiny_gguf)
    t.warm_up()
    yield t
    t.close()


def tokenize(target: LlamaCppTarget, text: str) -> list[int]:
    """Text between other tokens, tokenized as the template's text is (no BOS, specials parsed)."""
    return target._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def said(target: LlamaCppTarget, ids) -> str:
    """What ids say, control tokens included as their text (``<end_of_turn>``)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(target._llm.model)
    out = b""
    buf = bytearray(256)
    for token in ids:
        cbuf = (llama_cpp.ctypes.c_char * len(buf)).from_buffer(buf)
        n = llama_cpp.llama_token_to_piece(vocab, token, cbuf, len(buf), 0, True)
        out += bytes(buf[:n])
    return out.decode("utf-8", "replace")


def ids_saying(target: LlamaCppTarget, ids, text: str) -> int:
    """How many of ``ids`` say the start of ``text`` exactly (their leading space aside)."""
    goal, acc, best = text.encode("utf-8"), b"", 0
    for k, token in enumerate(ids, 1):
        piece = target.token_bytes(token)
        if not piece:
            break
        acc = (acc + piece).lstrip()
        if not goal.startswith(acc):
            break
        if acc:
            best = k
    return best


def run(target: LlamaCppTarget, messages, cancel: threading.Event | None = None):
    text = "".join(target.stream(messages, cancel or threading.Event()))
    return text, target.last_stats, target.last_reply_tokens


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def rendering_without_reply_lead(target: LlamaCppTarget, tokens: list[int]) -> str:
    """The prompt's text with the whitespace that opens each model turn removed: the ids may
    say a leading space that the reply's text (and so the template's rendering) drops."""
    return re.sub(r"(<start_of_turn>model\n)[ \t]+", r"\1", said(target, tokens))


# -- each turn evaluates the new user turn and nothing of the last reply ----------------------


def test_each_turn_evaluates_only_the_new_user_turn(target: LlamaCppTarget) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    template_only = len(tokenize(target, GEMMA_USER_TURN.format("")))
    previous: list[int] = []
    reply_ids: tuple[int, ...] = ()
    for i, question in enumerate(QUESTIONS):
        messages = conv.messages_for(question)
        tokens = target.prompt_tokens(messages)
        in_cache = target.kv_tokens
        predicted = target.prompt_cost(messages)
        reply, stats, new_ids = run(target, messages)
        assert stats.finish_reason == "length" and reply  # the tiny model never says <eos>
        if i:
            user_turn = tokenize(target, GEMMA_USER_TURN.format(question))
            assert len(user_turn) == template_only + len(tokenize(target, question))
            kept = ids_saying(target, reply_ids, conv.pairs[-1][1])
            assert kept >= len(reply_ids) - 1  # all of it (a trailing space is trimmed away)
            # The prompt is the last prompt, the ids the model generated, the new user turn.
            assert tokens == previous + list(reply_ids[:kept]) + user_turn
            # Every token in the cache is reused: the reply's ids (all but the last, which a
            # "length" finish samples and never evaluates) and everything before them.
            assert in_cache == previous + list(reply_ids[:-1])
            assert stats.cached_tokens == predicted.cached_tokens == min(len(in_cache),
                                                                        len(previous) + kept)
            assert stats.evaluated_tokens == len(tokens) - stats.cached_tokens
            assert stats.evaluated_tokens <= len(user_turn) + 1
        previous, reply_ids = tokens, new_ids
        conv.commit(question, reply)


def test_before_the_fix_the_reply_is_re_read(tiny_gguf: Path) -> None:
    # keep_reply_tokens=False is the old behaviour (the benchmark's "before"): re-tokenized
    # replies differ from the generated ids, so each turn re-reads about the whole reply.
    with make_target(tiny_gguf, keep_reply_tokens=False) as old, make_target(tiny_gguf) as new:
        evaluated = {}
        for name, target in (("old", old), ("new", new)):
            target.warm_up()
            conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
            counts = []
            for question in QUESTIONS[:4]:
                messages = conv.messages_for(question)
                reply, stats, _ = run(target, messages)
                counts.append(stats.evaluated_tokens)
                conv.commit(question, reply)
            evaluated[name] = counts[1:]
        for question, n_old, n_new in zip(QUESTIONS[1:], evaluated["old"], evaluated["new"],
                                          strict=False):
            user_turn = len(tokenize(old, GEMMA_USER_TURN.format(question)))
            assert n_new <= user_turn + 1 < n_old


# -- the ids say what the history says ------------------------------------------------------


def test_the_prompt_says_the_templates_rendering_with_the_replys_own_ids(
        target: LlamaCppTarget) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    generated = []
    for question in QUESTIONS[:4]:
        reply, _, ids = run(target, conv.messages_for(question))
        conv.commit(question, reply)
        generated.append(ids)
    messages = conv.messages_for("and one more")
    tokens = target.prompt_tokens(messages)
    # The prompt says exactly what Gemma 2's template renders (a reply's leading space aside) ...
    assert rendering_without_reply_lead(target, tokens) == target._template.render(messages)
    # ... each reply is its generated ids, and what follows each reply is the template's own
    # framing, tokenized as the template would have it.
    segments = target._template.segments(messages)
    assert segments is not None and len(segments.replies) == 4
    pos = len(target._tokenize_prompt(segments.texts[0]))
    for (_user, reply), ids, after in zip(conv.pairs, generated, segments.texts[1:],
                                          strict=True):
        kept = ids_saying(target, ids, reply)
        assert tokens[pos: pos + kept] == list(ids[:kept])
        pos += kept
        framing = tokenize(target, after)
        assert after.startswith("<end_of_turn>\n<start_of_turn>user\n")
        assert tokens[pos: pos + len(framing)] == framing
        pos += len(framing)
    assert pos == len(tokens)


def test_an_interrupted_reply_keeps_the_ids_of_what_was_spoken(target: LlamaCppTarget) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    for i, question in enumerate(QUESTIONS):  # until the gibberish has a few words to cut
        messages = conv.messages_for(question)
        previous = target.prompt_tokens(messages)
        reply, _, ids = run(target, messages)
        if i and len(reply.split()) >= 4:
            break
        conv.commit(question, reply)
    # Barge-in: the history keeps the words played, joined as the agent joins them.
    spoken = " ".join(reply.split()[:3])
    assert 0 < len(spoken) < len(reply.strip())
    conv.commit(question, spoken)
    messages = conv.messages_for("and then")
    tokens = target.prompt_tokens(messages)
    kept = ids_saying(target, ids, spoken)
    assert kept >= 2
    # No wrong token: the prompt says the history (the cut reply), not what was generated ...
    assert rendering_without_reply_lead(target, tokens) == target._template.render(messages)
    # ... and the ids of the spoken part stay, so the cache keeps them.
    assert tokens[: len(previous) + kept] == previous + list(ids[:kept])
    _, stats, _ = run(target, messages)
    assert stats.cached_tokens == len(previous) + kept
    assert stats.evaluated_tokens == len(tokens) - len(previous) - kept


def test_a_token_the_text_does_not_show_ends_the_cached_ids(target: LlamaCppTarget) -> None:
    # A thought-channel marker is a control token with no text; the history's text (markers
    # stripped) does not show it. Record such a generation: the prompt must keep the ids before
    # the marker and say the rest as text, never put the marker into the history.
    before = tokenize(target, " turn on the")
    marker = tokenize(target, "<start_of_turn>")
    after = tokenize(target, " lights please")
    target._replies.start(before + marker + after)
    history_text = "turn on the lights please"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": history_text},
                {"role": "user", "content": "thanks"}]
    tokens = target.prompt_tokens(messages)
    assert rendering_without_reply_lead(target, tokens) == target._template.render(messages)
    first = target.prompt_tokens(messages[:2])
    assert tokens[: len(first) + len(before)] == first + before
    assert marker[0] not in tokens[len(first):len(first) + len(before) + len(after) + 2]


def test_a_reply_the_template_rewrites_is_tokenized_as_text(tiny_gguf: Path) -> None:
    # A template that drops a thought channel from history replies: the ids say the thought,
    # the rendering does not, so that reply falls back to its text.
    template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
        "{{ m['content'].split('<channel|>')[-1] | trim }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    with make_target(tiny_gguf) as target:
        target._template = ChatTemplate(template, bos_token="<bos>", eos_token="<eos>")
        ids = tokenize(target, " the music<channel|>play music")
        target._replies.start(ids)
        messages = [{"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "the music<channel|>play music"},
                    {"role": "user", "content": "thanks"}]
        segments = target._template.segments(messages)
        assert segments is not None and segments.verbatim == (False,)
        assert segments.replies == ("play music",)
        plain = target._tokenize_prompt(target._template.render(messages))
        assert target.prompt_tokens(messages) == plain


def test_framing_that_is_plain_text_falls_back_to_the_rendering(tiny_gguf: Path) -> None:
    # ChatML's <|im_end|> is not a token of the tiny vocabulary: the text after the reply is
    # ordinary text that could merge with the reply's end, so no ids are spliced there.
    with make_target(tiny_gguf) as target:
        target._template = ChatTemplate(CHATML, bos_token="<bos>", eos_token="<eos>")
        messages = [{"role": "user", "content": "hello"}]
        reply, _, ids = run(target, messages)
        assert ids
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "hi"}]
        plain = target._tokenize_prompt(target._template.render(messages))
        assert target.prompt_tokens(messages) == plain


def test_a_reply_continued_after_a_failed_remote_keeps_all_its_ids(target: LlamaCppTarget) -> None:
    # Failover mid-answer: the local model continues after the words a remote already said;
    # the history holds both, and the next turn reuses the whole cache.
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    said_by_remote = "the weather today is"
    continuation, stats, ids = run_prefixed(target, messages, said_by_remote)
    assert stats.finish_reason == "length" and continuation
    in_cache = target.kv_tokens
    follow = [*messages, {"role": "assistant", "content": said_by_remote + continuation},
              {"role": "user", "content": "thanks"}]
    tokens = target.prompt_tokens(follow)
    assert tokens[: len(in_cache)] == in_cache
    _, stats, _ = run(target, follow)
    assert stats.cached_tokens == len(in_cache)
    assert stats.evaluated_tokens <= len(tokenize(target, GEMMA_USER_TURN.format("thanks"))) + 1


def run_prefixed(target: LlamaCppTarget, messages, reply_prefix: str):
    text = "".join(target.stream(messages, threading.Event(), reply_prefix=reply_prefix))
    return text, target.last_stats, target.last_reply_tokens


# -- a cancelled reply leaves the cache as the next prompt expects --------------------------


def test_a_dropped_speculative_answer_leaves_only_the_users_words(target: LlamaCppTarget) -> None:
    conv = Conversation(SYSTEM, target.max_prompt_tokens, target.count_tokens)
    reply, _, _ = run(target, conv.messages_for(QUESTIONS[0]))
    conv.commit(QUESTIONS[0], reply)
    # The answer starts at a pause ("turn on the") and is dropped when the user goes on.
    early = conv.messages_for("turn on the")
    early_tokens = target.prompt_tokens(early)
    stream = target.stream(early, threading.Event())
    for _ in range(3):
        next(stream)
    stream.close()
    stats = target.last_stats
    assert stats.finish_reason == "cancelled"
    ids = target.last_reply_tokens
    assert len(ids) == 3
    assert target.kv_tokens == early_tokens + list(ids[:-1])  # the last one was never evaluated

    final = conv.messages_for(QUESTIONS[1])
    final_tokens = target.prompt_tokens(final)
    shared = common_prefix(early_tokens, final_tokens)
    assert shared == common_prefix(target.kv_tokens, final_tokens)  # within the user's words
    assert said(target, final_tokens[:shared]).endswith("turn on the")
    assert target.prompt_cost(final).cached_tokens == shared
    reply, stats, ids = run(target, final)
    assert stats.cached_tokens == shared
    assert stats.evaluated_tokens == len(final_tokens) - shared
    conv.commit(QUESTIONS[1], reply)

    # The dropped answer is no part of the next prompt, and the real reply's ids are.
    messages = conv.messages_for(QUESTIONS[2])
    tokens = target.prompt_tokens(messages)
    assert tokens[: len(final_tokens) + len(ids) - 1] == final_tokens + list(ids[:-1])
    _, stats, _ = run(target, messages)
    assert stats.evaluated_tokens <= len(tokenize(target, GEMMA_USER_TURN.format(QUESTIONS[2]))) + 1


def test_a_reply_cancelled_by_the_event_is_cached_as_far_as_it_was_evaluated(
        target: LlamaCppTarget) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    prompt = target.prompt_tokens(messages)
    cancel = threading.Event()
    deltas = []
    for delta in target.stream(messages, cancel):
        deltas.append(delta)
        if len(deltas) == 4:
            cancel.set()
    ids = target.last_reply_tokens
    assert target.last_stats.finish_reason == "cancelled"
    assert target.kv_tokens == prompt + list(ids[:-1])
    # What was heard goes into the history; the next prompt reuses all of it from the cache.
    heard = "".join(deltas)
    follow = [*messages, {"role": "assistant", "content": heard},
              {"role": "user", "content": "again"}]
    tokens = target.prompt_tokens(follow)
    kept = ids_saying(target, ids, heard.strip())
    assert tokens[: len(prompt) + kept] == prompt + list(ids[:kept])
    _, stats, _ = run(target, follow)
    assert stats.cached_tokens == min(len(prompt) + kept, len(prompt) + len(ids) - 1)


# -- the template's segments ------------------------------------------------------------------


def test_segments_cut_the_rendering_around_each_reply(target: LlamaCppTarget) -> None:
    template = target._template
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "  hello there \n"},
                {"role": "user", "content": "bye"}, {"role": "assistant", "content": "…"},
                {"role": "user", "content": "ok"}]
    segments = template.segments(messages)
    assert segments is not None
    assert segments.replies == ("hello there", "…")  # as Gemma's `| trim` renders them
    assert segments.verbatim == (True, True)
    assert segments.texts[1] == "<end_of_turn>\n<start_of_turn>user\nbye<end_of_turn>\n" \
                                "<start_of_turn>model\n"
    joined = "".join(t + r for t, r in zip(segments.texts, segments.replies, strict=False))
    assert joined + segments.texts[-1] == template.render(messages)
    assert template.segments(messages[:2]) is None  # no reply to cut around


# -- matching a history reply to recorded ids (no model) -------------------------------------

PIECES = {1: b" hel", 2: b"lo", 3: b"", 4: b" wor", 5: b"ld", 6: b"\xc3", 7: b"\xa9", 8: b" "}


def fake_tokenize(text: bytes) -> list[int]:
    return [1000 + b for b in text]  # one id per byte, never a recorded id


def memory(*generations: list[int], fragments: bool = True) -> ReplyTokens:
    replies = ReplyTokens(PIECES.__getitem__, fake_tokenize if fragments else None)
    for ids in generations:
        replies.start(ids)
    return replies


def test_a_whole_reply_is_its_ids_leading_space_included() -> None:
    assert memory([1, 2, 4, 5]).ids_for("hello world") == (1, 2, 4, 5)
    assert memory([8, 1, 2]).ids_for("hello") == (8, 1, 2)
    assert memory([1, 2, 4, 5, 8]).ids_for("hello world") == (1, 2, 4, 5)  # trimmed end


def test_a_cut_or_changed_reply_keeps_the_ids_that_say_it_then_text() -> None:
    assert memory([1, 2, 4, 5]).ids_for("hello wo") == (1, 2, *fake_tokenize(b" wo"))
    assert memory([1, 2, 4, 5]).ids_for("hello there") == (1, 2, *fake_tokenize(b" there"))
    # A token with no text (a channel marker) ends the ids even though the text goes on.
    assert memory([1, 2, 3, 4, 5]).ids_for("hello world") == (1, 2, *fake_tokenize(b" world"))
    assert memory([4, 5]).ids_for("hello") is None
    # Without a faithful fragment tokenizer only a reply the ids say completely is spliced.
    assert memory([1, 2, 4, 5], fragments=False).ids_for("hello wo") is None
    assert memory([1, 2, 4, 5], fragments=False).ids_for("hello world") == (1, 2, 4, 5)


def test_ids_never_end_inside_a_character() -> None:
    # " é" is b" \xc3\xa9"; the generation said b" \xc3\xc3": keep the space, not half an é.
    replies = memory([1, 2, 8, 6, 6])
    assert replies.ids_for("hello é") == (1, 2, 8, *fake_tokenize("é".encode()))
    assert memory([1, 2, 8, 6, 7]).ids_for("hello é") == (1, 2, 8, 6, 7)


def test_a_reply_resolves_once_and_the_newest_generation_wins_a_tie() -> None:
    replies = memory([1, 2, 4, 5], [8, 1, 2, 4, 5])
    assert replies.ids_for("hello world") == (8, 1, 2, 4, 5)  # newest first
    replies.start([1, 2, 4, 5])
    assert replies.ids_for("hello world") == (8, 1, 2, 4, 5)  # kept: prompts stay prefixes
    assert memory().ids_for("hello") is None
