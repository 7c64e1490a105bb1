"""The model's own chat template (from the GGUF), with the system prompt folded in when needed.

We render prompts ourselves rather than through ``create_chat_completion`` so that the exact
token sequence is ours to compare with the KV cache. Gemma 2's template raises on a ``system``
message (and ``chat_format="gemma"`` silently drops it), so when a probe render shows the system
text does not survive, the system prompt is prepended to the first user message. That message
never changes while the history grows, so every turn's prompt starts with the same bytes.

``segments`` splits a rendered prompt around the assistant replies in it, so the local target can
put the token ids a reply was generated as where the reply's text would be re-tokenized (see
``reply_tokens``): the KV cache then survives the reply.

Gemma 4's template ends its generation prompt with an empty thought channel when thinking is off
(``<|turn>model\n<|channel>thought\n<channel|>``) but renders earlier model turns without it
(``<|turn>model\n{reply}``). Rendered as is, every prompt would differ from the KV cache right
where the previous reply starts, and each turn would re-read that reply. So what the generation
prompt adds after a model turn's header (the *reply prefill*) is put back in front of each
history reply: the prompt then says exactly what the model saw while it wrote the reply.
``thinking`` is passed to the template as ``enable_thinking`` (llama-cpp-python's own
``create_chat_completion`` never passes it: ``Llama`` ignores ``chat_template_kwargs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from edgevoice.llm.protocol import Message

SYSTEM_FOLD_SEPARATOR = "\n\n"
_SENTINEL = "EdgevoiceUserTextGoesHere"
_REPLY_SLOT = "EdgevoiceReplySlot"


@dataclass(frozen=True)
class Segments:
    """A rendered prompt cut around its assistant replies.

    ``render(messages) == texts[0] + replies[0] + texts[1] + ... + replies[-1] + texts[-1]``
    (``text``).
    ``replies[i]`` is the i-th reply as the template rendered it (Gemma's ``| trim`` applied);
    ``verbatim[i]`` is False when the template changed it beyond edge whitespace (say it strips
    a thought channel from the history): such a reply is only ever tokenized as text.
    """

    texts: tuple[str, ...]
    replies: tuple[str, ...]
    verbatim: tuple[bool, ...]

    @property
    def text(self) -> str:
        """The whole prompt."""
        parts = [self.texts[0]]
        for reply, after in zip(self.replies, self.texts[1:], strict=True):
            parts += [reply, after]
        return "".join(parts)


class ChatTemplateError(ValueError):
    """The template cannot render this conversation (bad roles, or a broken template)."""


class ChatTemplate:
    """A GGUF ``tokenizer.chat_template`` rendered with jinja2 (llama-cpp-python's sandbox)."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str,
                 thinking: bool = False) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            self._formatter, self._history_formatter = (
                Jinja2ChatFormatter(template=template, bos_token=bos_token, eos_token=eos_token,
                                    add_generation_prompt=generation)
                for generation in (True, False))
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not parse: {exc}") from exc
        self.bos_token = bos_token
        self.thinking = thinking
        self.supports_system = self._probe_system()
        self.reply_header, self.reply_prefill = self._probe_reply_prefill()

    def _probe_system(self) -> bool:
        """True when a system message renders and its text appears in the prompt."""
        marker = "EdgevoiceSystemProbe"
        probe = [{"role": "system", "content": marker}, {"role": "user", "content": "hi"}]
        try:
            return marker in self._render_raw(probe)
        except ChatTemplateError:
            return False

    def _probe_reply_prefill(self) -> tuple[str, str]:
        """(model turn header, what the generation prompt adds after it), e.g. Gemma 4 with
        thinking off: ("<|turn>model\\n", "<|channel>thought\\n<channel|>"); ("", "") when
        the generation prompt is just the header (Gemma 2) or the probe does not render."""
        user: list[Message] = [{"role": "user", "content": "hi"}]
        mark = f"{_REPLY_SLOT}Probe"
        try:
            base = self._render_raw(user, generation=False)
            turn = self._render_raw([*user, {"role": "assistant", "content": mark}],
                                    generation=False)
            prompt = self._render_raw(user)
        except ChatTemplateError:
            return "", ""
        at = turn.find(mark)
        if at < 0 or not turn.startswith(base) or not prompt.startswith(base):
            return "", ""
        header, tail = turn[len(base):at], prompt[len(base):]
        if not tail.startswith(header) or len(tail) == len(header):
            return "", ""
        return header, tail[len(header):]

    def _render_raw(self, messages: list[Message], *, generation: bool = True) -> str:
        formatter = self._formatter if generation else self._history_formatter
        try:
            return formatter(messages=messages,  # type: ignore[arg-type]
                             enable_thinking=self.thinking).prompt
        except (ValueError, jinja2.TemplateError) as exc:
            raise ChatTemplateError(str(exc)) from exc

    def prepare(self, messages: list[Message]) -> list[Message]:
        """The messages as this template wants them: system folded into the first user turn."""
        if self.supports_system or not messages or messages[0]["role"] != "system":
            return messages
        system, rest = messages[0]["content"], messages[1:]
        if not rest or rest[0]["role"] != "user":
            raise ChatTemplateError("after the system message the conversation must start with "
                                    "a user message")
        if not system.strip():
            return rest
        first = {"role": "user", "content": system + SYSTEM_FOLD_SEPARATOR + rest[0]["content"]}
        return [first, *rest[1:]]

    def render(self, messages: list[Message]) -> str:
        """The prompt text for ``messages``, ending with the assistant's generation prompt
        (history replies behind the reply prefill, see the module doc)."""
        if self.reply_prefill:
            segments = self.segments(messages)
            if segments is not None:
                return segments.text
        return self._render_raw(self.prepare(messages))

    def segments(self, messages: list[Message]) -> Segments | None:
        """The prompt for ``messages`` cut around each non-blank assistant reply.

        Found by rendering once with a marker in place of each reply and once for real. None
        when there is no reply, or the template does not render each reply exactly once between
        the same surrounding text (then the prompt is only ever tokenized whole).
        """
        prepared = self.prepare(messages)
        slots = [i for i, m in enumerate(prepared)
                 if m["role"] == "assistant" and m.get("content", "").strip()]
        if not slots:
            return None
        marks = [f"{_REPLY_SLOT}{j}x" for j in range(len(slots))]
        marked = [dict(m) for m in prepared]
        for i, mark in zip(slots, marks, strict=True):
            marked[i]["content"] = mark
        text = self._render_raw(marked)
        texts: list[str] = []
        pos = 0
        for mark in marks:
            at = text.find(mark, pos)
            if at < 0 or text.find(mark, at + len(mark)) >= 0:
                return None
            texts.append(text[pos:at])
            pos = at + len(mark)
        texts.append(text[pos:])

        real = self._render_raw(prepared)
        if not real.startswith(texts[0]):
            return None
        pos = len(texts[0])
        replies: list[str] = []
        verbatim: list[bool] = []
        for j, i in enumerate(slots):
            content, after, last = prepared[i]["content"], texts[j + 1], j == len(slots) - 1
            found = None
            for candidate in dict.fromkeys((content, content.strip(), content.lstrip(),
                                            content.rstrip())):
                end = pos + len(candidate)
                if real.startswith(candidate, pos) and (
                        real[end:] == after if last else real.startswith(after, end)):
                    found = candidate
                    break
            if found is not None:
                replies.append(found)
                verbatim.append(True)
            else:  # the template rewrote the reply: take what it rendered, as text only
                end = len(real) - len(after) if last else real.find(after, pos)
                if end < pos or (last and not real.endswith(after)):
                    return None
                replies.append(real[pos:end])
                verbatim.append(False)
            pos += len(replies[-1]) + len(after)
        if pos != len(real):
            return None
        if self.reply_prefill:  # say each reply behind the prefill it was generated after
            texts = [t + self.reply_prefill if j < len(replies) and t.endswith(self.reply_header)
                     else t for j, t in enumerate(texts)]
        return Segments(tuple(texts), tuple(replies), tuple(verbatim))

    def stable_prefix(self, system_prompt: str) -> str:
        """Prompt text every conversation with this system prompt starts with.

        That is everything before the first user's words (BOS, the system block or the folded
        system text, the user header): what ``warm_up`` can evaluate before anyone speaks.
        """
        messages: list[Message] = [{"role": "user", "content": _SENTINEL}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = self.render(messages)
        index = text.find(_SENTINEL)
        return text[:index] if index >= 0 else ""
