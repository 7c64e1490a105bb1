"""The local chat target: one long-lived llama.cpp model whose KV cache carries the conversation.

Latency is the point of every choice here (see DESIGN.md, "Latency principles"):

* One ``Llama`` for the life of the process; each turn's prompt is rendered and tokenized by us,
  compared with the tokens already in the KV cache, and only the differing suffix is evaluated
  (a history that only appends makes that suffix just the new turn).
* A reply in the history is put into the prompt as the token ids it was generated as, not as its
  re-tokenized text (``reply_tokens``), so the cache's prefix survives the reply: the next turn
  evaluates the template's end-of-turn framing and the new user words, nothing of the reply.
* ``warm_up`` evaluates the part every prompt starts with (BOS, system prompt, user header) before
  anyone speaks, so the first turn pays only for the user's words.
* Cancellation: between tokens by checking the Event; during a long prefill through llama.cpp's
  abort callback (CPU backend only), which makes ``llama_decode`` return 2. Whole batches that
  finished before the abort stay in the cache and count as cached next time.
* Native logs go to ``logging`` (see ``native_log``); nothing is printed and no file descriptor
  is redirected.
* A thought channel (Gemma 4's ``<|channel>...<channel|>``) is cut out by token id before any
  text is yielded (``thoughts``): it is never spoken, shown or put in the history.

Not thread-safe: a ``LlamaCppTarget`` belongs to one worker thread, which constructs it, calls
every method and advances every ``stream`` iterator. Only ``cancel.set()`` comes from elsewhere.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgevoice.config import LlmConfig
from edgevoice.errors import ModelError
from edgevoice.llm.chat_template import ChatTemplate, ChatTemplateError
from edgevoice.llm.fit import threads_for, usable_cores
from edgevoice.llm.native_log import quiet_llama_prints, route_native_logs, take_recent_errors
from edgevoice.llm.protocol import Message, PromptCost, StreamStats, TargetError, TargetInfo
from edgevoice.llm.reply_tokens import ReplyTokens
from edgevoice.llm.thoughts import ThoughtFilter, ThoughtMarkers

log = logging.getLogger(__name__)

GET_A_MODEL = (
    "run `edgevoice models pull gemma-4-e2b-it` (Gemma 4 E2B instruct, 3.1 GB; "
    "`edgevoice models list` has lighter ones such as gemma-2-2b-it) and set `llm.model` to its "
    "name, or point `llm.model` / --llm-model at any instruct GGUF file"
)
GGUF_MAGIC = b"GGUF"
PROMPT_MARGIN_TOKENS = 8
"""Kept free beyond prompt + reply, so a prompt priced by ``Conversation`` always fits."""


def default_threads() -> int:
    """``threads_for`` the usable cores (``llm.threads: 0``)."""
    return threads_for(usable_cores())


def resolve_gpu_layers(setting: str | int, supports_offload: bool) -> int:
    """``auto`` -> all layers (-1) when this llama.cpp build can offload, else 0."""
    if setting == "auto":
        return -1 if supports_offload else 0
    layers = int(setting)
    if layers and not supports_offload:
        log.warning("llm.gpu_layers = %d but this llama.cpp build has no GPU backend: running on "
                    "the CPU", layers)
        return 0
    return layers


def check_model_file(model: str | os.PathLike[str] | None) -> Path:
    """The model path, or a ModelError saying what is wrong with it and how to fix it."""
    if not model:
        raise ModelError(f"no local language model is configured: {GET_A_MODEL}")
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(f"language model {path} does not exist: {GET_A_MODEL}")
    if path.is_dir():
        raise ModelError(f"language model {path} is a folder, not a .gguf file: point `llm.model` "
                         "or --llm-model at the GGUF file itself")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read language model {path} ({exc.strerror}): check its "
                         "permissions") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"language model {path} is not a GGUF file (it does not start with the "
                         f"GGUF signature): {GET_A_MODEL}")
    return path


_LOG_PREFIX = re.compile(r"^(?:[A-Za-z_][\w.]*: |error loading model: )+")


def native_reason(errors: list[str]) -> str:
    """The root cause among llama.cpp's error lines (the first), without function prefixes."""
    return _LOG_PREFIX.sub("", errors[0]).strip() if errors else ""


class Utf8Pieces:
    """Token bytes in, valid UTF-8 text out: a character split across tokens waits for its end.

    Byte-fallback tokens (``<0xC3>``, ``<0xA9>``) carry one byte each; emitting them separately
    would put U+FFFD into the speech; invalid bytes are dropped rather than spoken. Leading
    whitespace of the reply is dropped (chat templates trim it from the history anyway).
    """

    def __init__(self, *, strip_leading: bool = True) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._started = not strip_leading

    def push(self, data: bytes) -> str:
        return self._emit(self._decoder.decode(data))

    def flush(self) -> str:
        return self._emit(self._decoder.decode(b"", final=True))

    def _emit(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        return text


class LlamaCppTarget:
    """``ChatTarget`` on llama-cpp-python with KV-cache prefix reuse across turns.

    ``n_batch``, ``seed`` and ``keep_reply_tokens`` are for tests and benchmarks; everything a user
    sets is in ``LlmConfig``. ``keep_reply_tokens=False`` re-tokenizes history replies as text
    (the behaviour before ``reply_tokens``: each turn re-reads the reply's mismatching tail).
    """

    kind = "local"

    def __init__(
        self, cfg: LlmConfig, name: str = "local", *, n_batch: int = 512, seed: int | None = None,
        keep_reply_tokens: bool = True,
    ) -> None:
        import llama_cpp

        self.name = name
        self._cfg = cfg
        self._path = check_model_file(cfg.model)
        self._supports_offload = bool(llama_cpp.llama_supports_gpu_offload())
        self._gpu_layers = resolve_gpu_layers(cfg.gpu_layers, self._supports_offload)
        self._threads = cfg.threads or default_threads()
        self._last_stats: StreamStats | None = None
        self._warm_up_ms: float | None = None
        self._closed = False

        route_native_logs()
        take_recent_errors()
        start = time.perf_counter()
        try:
            with quiet_llama_prints():
                self._llm = llama_cpp.Llama(
                    model_path=str(self._path),
                    n_ctx=cfg.n_ctx,
                    n_batch=min(n_batch, cfg.n_ctx),
                    n_threads=self._threads,
                    n_threads_batch=self._threads,
                    n_gpu_layers=self._gpu_layers,
                    seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed,
                    swa_full=True,  # a sliding-window cache cannot serve a truncated prefix
                    verbose=True,  # False would dup2() the process's stdout/stderr to /dev/null
                )
        except ValueError as exc:
            why = native_reason(take_recent_errors()) or str(exc)
            if "context" in str(exc):
                raise ModelError(f"cannot create a {cfg.n_ctx}-token context for {self._path} "
                                 f"(llama.cpp: {why}): lower `llm.n_ctx`") from None
            raise ModelError(f"cannot load language model {self._path} (llama.cpp: {why}): the "
                             "file is damaged, truncated or not a model this llama.cpp supports; "
                             "download it again or point `llm.model` at another GGUF") from None
        self._llm.verbose = False  # construction is over; keep later code paths silent
        self.load_ms = (time.perf_counter() - start) * 1000.0

        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._bos = self._llm.token_bos()
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._piece_buf = ctypes.create_string_buffer(64)
        self._template = self._load_template()
        self._thought_markers = ThoughtMarkers.find(self._single_token)
        self.keep_reply_tokens = keep_reply_tokens
        self._replies = ReplyTokens(self._piece_bytes, self._fragment_tokenizer())
        self._last_reply_tokens: tuple[int, ...] = ()
        self._abort_event: threading.Event | None = None
        self._abort_cb = llama_cpp.ggml_abort_callback(self._should_abort)
        log.info("%s: loaded %s in %.0f ms (n_ctx %d, %d threads, %s, system prompt %s)",
                 name, self._path.name, self.load_ms, cfg.n_ctx, self._threads,
                 f"{self._gpu_layers} GPU layers" if self._gpu_layers else "CPU",
                 "native" if self._template.supports_system else "folded into the first turn")
        if self._template.reply_prefill:
            log.debug("%s: history replies are said behind the generation prompt's %r",
                      name, self._template.reply_prefill)

    # -- setup -------------------------------------------------------------------------------

    def _load_template(self) -> ChatTemplate:
        import llama_cpp

        source = self._llm.metadata.get("tokenizer.chat_template")
        if not source:
            self.close()
            raise ModelError(f"language model {self._path} has no chat template "
                             "(tokenizer.chat_template): use an instruct GGUF such as "
                             "gemma-4-E2B-it-Q4_K_M.gguf (`edgevoice models pull "
                             "gemma-4-e2b-it`)")

        def text(token: int) -> str:
            if token < 0:
                return ""
            return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

        try:
            return ChatTemplate(source, bos_token=text(self._bos),
                                eos_token=text(self._llm.token_eos()),
                                thinking=self._cfg.thinking)
        except ChatTemplateError as exc:
            self.close()
            raise ModelError(f"language model {self._path} has an unusable chat template "
                             f"({exc}): use another GGUF of the model") from None

    # -- tokens ------------------------------------------------------------------------------

    def _tokenize_prompt(self, text: str) -> list[int]:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and self._bos >= 0 and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def _single_token(self, text: str) -> int | None:
        """The id of a special token spelled ``text``, or None when the vocabulary has none."""
        import llama_cpp

        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) != 1:
            return None
        attr = int(llama_cpp.llama_vocab_get_attr(self._vocab, tokens[0]))
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        return tokens[0] if attr & special else None

    def _tokenize_fragment(self, text: bytes) -> list[int]:
        """Tokens of text that sits between other tokens (no BOS), parsed like a whole prompt."""
        return self._llm.tokenize(text, add_bos=False, special=True)

    def _fragment_tokenizer(self):
        """``_tokenize_fragment``, or None when the tokenizer adds a space in front of text it
        starts with (SentencePiece's add_space_prefix): a fragment would then gain a space."""
        probe = self._llm.tokenize(b"a", add_bos=False, special=False)
        said = b"".join(self._piece_bytes(t) for t in probe)
        return self._tokenize_fragment if said == b"a" else None

    def _opens_text(self, tokens: list[int]) -> bool:
        """Whether ``tokens`` start with a control or user-defined token: text before them was
        tokenized apart from them in any case, so ids may stand right before."""
        import llama_cpp

        if not tokens:
            return False
        attr = int(llama_cpp.llama_vocab_get_attr(self._vocab, tokens[0]))
        return bool(attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
                            | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED))

    def prompt_tokens(self, messages: list[Message], reply_prefix: str = "") -> list[int]:
        """The exact tokens ``stream(messages)`` evaluates (template applied, system folded).

        History replies this target generated are put as the ids it generated them as (as far
        as those say exactly the history's text, see ``reply_tokens``); the rest is the
        template's rendering, tokenized. Reads only (tokenizer, cache bookkeeping): another
        thread may call this, ``count_tokens`` and ``prompt_cost`` for an estimate while the
        worker is generating.
        """
        spliced = self._spliced_tokens(messages, reply_prefix) if self.keep_reply_tokens else None
        if spliced is not None:
            return spliced
        return self._tokenize_prompt(self._template.render(messages) + reply_prefix)

    def _spliced_tokens(self, messages: list[Message], reply_prefix: str) -> list[int] | None:
        """The prompt with generated ids in place of history replies; None when none applies.

        The text right after a spliced reply must start with a control token (Gemma's
        ``<end_of_turn>``, ChatML's ``<|im_end|>``), so every token around the reply is exactly
        what tokenizing the whole rendering gives; a reply the template rewrote, or one no
        recorded generation says, is tokenized as text together with its neighbours.
        """
        if not self._replies:
            return None
        segments = self._template.segments(messages)
        if segments is None:
            return None
        tokens: list[int] = []
        text = segments.texts[0]
        spliced = False
        for reply, verbatim, after in zip(segments.replies, segments.verbatim,
                                          segments.texts[1:], strict=True):
            ids = self._replies.ids_for(reply) if verbatim else None
            after_tokens = self._tokenize_fragment(after.encode("utf-8")) if ids else []
            if not ids or not self._opens_text(after_tokens):
                text += reply + after
                continue
            tokens += (self._tokenize_prompt(text) if not tokens
                       else self._tokenize_fragment(text.encode("utf-8")))
            tokens += ids
            text = after
            spliced = True
        if not spliced:
            return None
        tokens += self._tokenize_fragment((text + reply_prefix).encode("utf-8"))
        return tokens

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt size of ``messages`` in tokens (the ``Conversation`` budget uses this)."""
        return len(self.prompt_tokens(messages))

    @property
    def max_prompt_tokens(self) -> int:
        """Room for the prompt: the context minus the longest reply and a small margin."""
        return self._cfg.n_ctx - self._cfg.max_tokens - PROMPT_MARGIN_TOKENS

    @property
    def kv_tokens(self) -> list[int]:
        """The tokens whose keys and values are in the KV cache now."""
        return self._llm.input_ids[: self._llm.n_tokens].tolist()

    def _common_prefix(self, tokens: list[int]) -> int:
        n = min(self._llm.n_tokens, len(tokens))
        if n == 0:
            return 0
        diff = np.flatnonzero(self._llm.input_ids[:n] != np.asarray(tokens[:n], dtype=np.intc))
        return int(diff[0]) if diff.size else n

    def prompt_cost(self, messages: list[Message]) -> PromptCost:
        """What ``stream(messages)`` would evaluate now (the router predicts prefill from it)."""
        tokens = self.prompt_tokens(messages)
        return PromptCost(len(tokens), min(self._common_prefix(tokens), len(tokens) - 1))

    def _keep_prefix(self, tokens: list[int], *, leave_one: bool) -> int:
        """Cut the KV cache back to its common prefix with ``tokens``; return the kept length.

        With ``leave_one`` at least one token stays to evaluate, because sampling needs fresh
        logits for the prompt's last position.
        """
        import llama_cpp

        keep = self._common_prefix(tokens)
        if leave_one:
            keep = min(keep, len(tokens) - 1)
        keep = max(keep, 0)
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
            log.debug("partial KV removal unsupported: clearing the cache")
            keep = 0
        elif keep:
            # A sliding-window cache may have dropped positions the kept prefix still needs
            # (llama.cpp's server makes the same check); swa_full=True should prevent it.
            n_swa = max(1, llama_cpp.llama_model_n_swa(self._llm.model))
            if llama_cpp.llama_memory_seq_pos_min(memory, 0) > max(0, keep - n_swa):
                log.debug("KV cache no longer holds the whole prefix: clearing it")
                keep = 0
        if keep == 0:
            llama_cpp.llama_memory_clear(memory, False)
        self._llm.n_tokens = keep
        return keep

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token as generated text (a byte token is one byte of UTF-8)."""
        return self._piece_bytes(token)

    def _piece_bytes(self, token: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf,
                                           len(self._piece_buf), 0, False)
        if n < 0:  # a piece longer than the buffer: llama.cpp says how long
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf,
                                               len(self._piece_buf), 0, False)
        return self._piece_buf.raw[: max(n, 0)]

    # -- cancellation during prefill -----------------------------------------------------------

    def _should_abort(self, _data: Any) -> bool:
        event = self._abort_event
        return event is not None and event.is_set()

    def _set_abort(self, event: threading.Event | None) -> None:
        """Install the abort callback only around prefill: it runs once per graph node and
        takes the GIL each time, which the token loop doesn't need (it checks between tokens)."""
        import llama_cpp

        self._abort_event = event
        callback = self._abort_cb if event is not None else llama_cpp.ggml_abort_callback()
        llama_cpp.llama_set_abort_callback(self._llm.ctx, callback, None)

    # -- ChatTarget ----------------------------------------------------------------------------

    @property
    def last_stats(self) -> StreamStats | None:
        return self._last_stats

    @property
    def last_reply_tokens(self) -> tuple[int, ...]:
        """The ids of the latest ``stream``'s reply (a ``reply_prefix``'s first, then those
        generated; end-of-turn excluded): what a later prompt puts for that reply. The KV cache
        holds all of them but, after a "length" or "cancelled" finish, the last one sampled."""
        return self._last_reply_tokens

    def describe(self) -> TargetInfo:
        return TargetInfo(
            name=self.name,
            kind=self.kind,
            model=self._path.name,
            device="gpu" if self._gpu_layers else "cpu",
            details={
                "path": str(self._path),
                "model_name": self._llm.metadata.get("general.name", ""),
                "n_ctx": self._cfg.n_ctx,
                "threads": self._threads,
                "gpu_layers": self._gpu_layers,
                "supports_gpu_offload": self._supports_offload,
                "system_prompt": "native" if self._template.supports_system else "folded",
                "thinking": self._template.thinking,
                "thought_channel": self._thought_markers is not None,
                "load_ms": round(self.load_ms, 1),
                "warm_up_ms": None if self._warm_up_ms is None else round(self._warm_up_ms, 1),
            },
        )

    def warm_up(self) -> None:
        """Evaluate the prompt start every conversation shares, before the first turn.

        Idempotent, and it never discards a conversation already in the cache that starts
        with that prefix.
        """
        self._check_open()
        start = time.perf_counter()
        prefix = self._template.stable_prefix(self._cfg.system_prompt)
        tokens = self._tokenize_prompt(prefix)
        kept = self._common_prefix(tokens)
        if kept < len(tokens):
            kept = self._keep_prefix(tokens, leave_one=False)
            self._llm.eval(tokens[kept:])
        self._warm_up_ms = (time.perf_counter() - start) * 1000.0
        log.info("%s: warm-up evaluated %d prompt-prefix tokens (%d cached) in %.0f ms",
                 self.name, len(tokens) - kept, kept, self._warm_up_ms)

    def prefill(self, messages: list[Message], cancel: threading.Event) -> int:
        """Evaluate ``messages``' prompt into the KV cache ahead of ``stream`` (all but its last
        token, which ``stream`` evaluates for fresh logits); return the tokens evaluated.

        For speculation while the user may still be talking: a later ``stream`` whose prompt
        shares a prefix with these messages evaluates only what differs. Stops soon after
        ``cancel`` is set; whole batches done by then stay in the cache.
        """
        self._check_open()
        tokens = self.prompt_tokens(messages)
        if len(tokens) >= self._cfg.n_ctx or cancel.is_set():
            return 0
        kept = self._keep_prefix(tokens, leave_one=True)
        todo = tokens[kept:-1]
        if not todo:
            return 0
        self._set_abort(cancel)
        try:
            self._llm.eval(todo)
        except RuntimeError as exc:
            if not cancel.is_set():
                raise TargetError(f"llama.cpp failed while prefilling: {exc}") from exc
        finally:
            self._set_abort(None)
        return max(0, self._llm.n_tokens - kept)

    def stream(
        self, messages: list[Message], cancel: threading.Event, *, reply_prefix: str = ""
    ) -> Iterator[str]:
        """Stream the reply to ``messages``; see ``ChatTarget.stream``.

        Ends at the template's end-of-turn token or EOS ("stop"), at ``llm.max_tokens`` or the
        context's end ("length"), or soon after ``cancel`` is set ("cancelled"; the KV cache stays
        consistent). ``ChatTemplateError`` (a ValueError) for messages the template rejects.
        ``reply_prefix`` is reply text already spoken (say by a remote target that failed
        mid-answer): the model continues after it and only the continuation is yielded.
        Close the iterator (or exhaust it) on the worker thread that owns this target.
        """
        self._check_open()
        return self._stream(messages, cancel, reply_prefix)

    def _stream(
        self, messages: list[Message], cancel: threading.Event, reply_prefix: str
    ) -> Iterator[str]:
        import llama_cpp

        start = time.perf_counter()
        self._last_stats = None
        self._last_reply_tokens = ()
        tokens = self.prompt_tokens(messages, reply_prefix)
        n_ctx = self._cfg.n_ctx
        if len(tokens) >= n_ctx:
            self._last_stats = StreamStats(len(tokens), 0, 0, 0, None, 0.0, "error")
            raise TargetError(f"prompt of {len(tokens)} tokens does not fit the {n_ctx}-token "
                              "context")
        budget = min(self._cfg.max_tokens, n_ctx - len(tokens))
        stats = StreamStats(len(tokens), 0, 0, 0, None, 0.0, "error")
        if cancel.is_set():
            stats.cached_tokens = min(self._common_prefix(tokens), len(tokens) - 1)
            stats.finish_reason = "cancelled"
            self._finish(stats, start)
            return
        stats.cached_tokens = self._keep_prefix(tokens, leave_one=True)
        suffix = tokens[stats.cached_tokens:]
        reply_ids = self._start_reply(messages, tokens, reply_prefix)
        generator = self._llm.generate(
            suffix, reset=False, temp=self._cfg.temperature, top_k=40, top_p=0.95, min_p=0.05,
            repeat_penalty=1.0,
        )
        text = Utf8Pieces(strip_leading=not reply_prefix)
        thoughts = ThoughtFilter(self._thought_markers)
        prefilling = True
        self._set_abort(cancel)
        try:
            for token in generator:
                if prefilling:
                    prefilling = False
                    self._set_abort(None)
                    stats.evaluated_tokens = len(suffix)
                    stats.first_token_ms = (time.perf_counter() - start) * 1000.0
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    stats.finish_reason = "stop"
                    break
                reply_ids.append(token)
                stats.completion_tokens += 1
                delta = text.push(self.token_bytes(token)) if thoughts.speak(token) else ""
                if delta:
                    yield delta
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                    break
                if stats.completion_tokens >= budget:
                    stats.finish_reason = "length"
                    break
            else:  # generate() never ends by itself; keep the bookkeeping honest if it does
                stats.finish_reason = "stop"
            tail = text.flush()
            if tail and stats.finish_reason != "cancelled":
                yield tail
        except GeneratorExit:  # the consumer stopped iterating: treat as cancelled
            stats.finish_reason = "cancelled"
            raise
        except RuntimeError as exc:
            if not cancel.is_set():
                raise TargetError(f"llama.cpp failed while answering: {exc}") from exc
            stats.finish_reason = "cancelled"  # llama_decode returned 2: aborted in prefill
        finally:
            self._set_abort(None)
            generator.close()
            if prefilling:  # whole batches that finished before an abort stay in the cache
                stats.evaluated_tokens = max(0, self._llm.n_tokens - stats.cached_tokens)
            self._last_reply_tokens = tuple(reply_ids)
            if thoughts.thought_tokens:
                log.info("%s: %d thought-channel tokens held back", self.name,
                         thoughts.thought_tokens)
            self._finish(stats, start)

    def _start_reply(self, messages: list[Message], tokens: list[int],
                     reply_prefix: str) -> list[int]:
        """The list this reply's ids are appended to, remembered for later prompts. A reply
        continued after ``reply_prefix`` starts with the prompt's ids for that prefix."""
        if not reply_prefix:
            return self._replies.start()
        base = self.prompt_tokens(messages)
        if tokens[: len(base)] != base:  # the prefix merged into the generation prompt's tokens
            return []
        return self._replies.start(tokens[len(base):])

    def _finish(self, stats: StreamStats, start: float) -> None:
        stats.total_ms = (time.perf_counter() - start) * 1000.0
        self._last_stats = stats
        speed = stats.tokens_per_s
        log.info(
            "%s: prompt %d tokens, %d cached, %d evaluated; first token %s; %d tokens in %.0f ms%s;"
            " %s", self.name, stats.prompt_tokens, stats.cached_tokens, stats.evaluated_tokens,
            "-" if stats.first_token_ms is None else f"{stats.first_token_ms:.0f} ms",
            stats.completion_tokens, stats.total_ms,
            f" ({speed:.1f} tok/s)" if speed else "", stats.finish_reason,
        )

    # -- lifetime ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TargetError(f"target {self.name} is closed")

    def close(self) -> None:
        """Free the model and its context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        llm = getattr(self, "_llm", None)
        if llm is not None:
            self._abort_event = None
            llm.close()

    def __enter__(self) -> LlamaCppTarget:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
