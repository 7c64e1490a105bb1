"""Issue 17: edgevoice speaks Wyoming. A real `edgevoice wyoming` process, driven by the
`wyoming` package's own async client exactly as Home Assistant's integration drives it:
describe, transcribe real clips, synthesize, conversation turns (intents, the tiny model, a real
remote), and the limits: many clients, clients that leave, bad events, too much audio or text,
no leaked descriptors or threads."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wyoming", reason="the wyoming package (pip install wyoming)")

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event, async_write_event  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop  # noqa: E402

from edgevoice.devtools import wyoming_peer as peer  # noqa: E402
from edgevoice.devtools.fault_server import (  # noqa: E402
    FaultServer,
    llama_server,
    llama_server_missing,
)
from edgevoice.evaluation import corpus_wer, read_manifest  # noqa: E402

CLIPS = ("pocketsphinx__goforward.wav", "pocketsphinx__cards_002.wav")
ALONE: dict[str, str] = {}  # clip -> what the server heard when it was the only client


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wy") / "c.yaml"
    path.write_text("llm:\n  max_tokens: 12\n  temperature: 0.0\n"
                    "vad:\n  max_utterance_s: 3.0\n"
                    "wyoming:\n  max_clients: 5\n  max_audio_s: 5.0\n  idle_timeout_s: 20\n")
    return path


@pytest.fixture(scope="module")
def server(config, tiny_gguf):
    with peer.wyoming_server(["-v", "--config", str(config), "--uri", "tcp://127.0.0.1:0",
                              "--llm-model", str(tiny_gguf)]) as proc:
        yield proc
        assert proc.process.poll() is None, "\n".join(proc.log[-20:])
    assert proc.process.returncode == 0, "\n".join(proc.log[-20:])
    assert not any("Traceback" in line for line in proc.log), "\n".join(proc.log)


def where(server):
    return server.host, server.port


def test_describe_names_each_service_its_models_languages_and_version(server):
    from edgevoice import __version__

    info = run(peer.describe(*where(server)))
    (asr,), (tts,), (handle,) = info.asr, info.tts, info.handle
    assert asr.name == "edgevoice-asr" and asr.installed and asr.version == __version__
    assert asr.supports_transcript_streaming
    assert asr.models[0].name.startswith("pocketsphinx") and "en" in asr.models[0].languages
    assert tts.supports_synthesize_streaming and tts.voices and "en" in tts.voices[0].languages
    assert handle.name == "edgevoice" and [m.name for m in handle.models] == ["tiny-gemma2.gguf"]
    assert not info.wake and not info.intent  # we serve no wake word and no bare intent service


def test_transcripts_are_as_good_as_edgevoice_transcribe(server, speech_folder, config):
    refs = {c.path.name: c.reference for c in read_manifest(speech_folder)}
    paths = [speech_folder / name for name in CLIPS]
    out = subprocess.run([sys.executable, "-m", "edgevoice", "transcribe", "--config",
                          str(config), "--json", *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        cli.setdefault(Path(row["file"]).name, []).append(row["text"])
    ours = {p.name: run(peer.transcribe(*where(server), peer.read_pcm16(p))) for p in paths}
    ALONE.update({name: t.text for name, t in ours.items()})
    wer_cli = corpus_wer([(refs[n], " ".join(cli.get(n, []))) for n in CLIPS])
    wer_wy = corpus_wer([(refs[n], ours[n].text) for n in CLIPS])
    assert wer_wy <= wer_cli, (wer_wy, wer_cli, {n: t.text for n, t in ours.items()})
    assert wer_wy < 0.5


def test_any_rate_width_and_channels_is_resampled(server, speech_folder):
    import soxr

    clip = speech_folder / CLIPS[0]
    mono = np.frombuffer(peer.read_pcm16(clip), dtype="<i2")
    heard_16k = ALONE.get(CLIPS[0]) or run(peer.transcribe(*where(server), mono.tobytes())).text
    up = np.clip(soxr.resample(mono.astype(np.float32), 16000, 44100), -32768, 32767)
    stereo32 = (np.repeat(up[:, None], 2, axis=1).astype(np.int32) << 16).astype("<i4")
    heard = run(peer.transcribe(*where(server), stereo32.tobytes(), 44100, 4, 2))
    reference = "go forward ten meters"
    assert corpus_wer([(reference, heard.text)]) <= corpus_wer([(reference, heard_16k)]) + 0.25
    assert "forward" in heard.text


def test_words_fixed_at_an_utterance_end_stream_before_the_audio_ends(server, speech_folder):
    first = peer.read_pcm16(speech_folder / "pocketsphinx__goforward.wav")
    second = peer.read_pcm16(speech_folder / "pocketsphinx__cards_002.wav")
    gap = bytes(2 * 16000)  # 1 s of silence: the first utterance ends (vad.hangover_ms)

    async def go():
        async with AsyncTcpClient(*where(server)) as client:
            await client.write_event(AudioStart(16000, 2, 1).event())
            for event in peer.pcm_events(first + gap, 16000, 2, 1):
                await client.write_event(event)
            early = [await asyncio.wait_for(client.read_event(), 60)]  # before any audio-stop
            while early[-1].type != "transcript-chunk":
                early.append(await asyncio.wait_for(client.read_event(), 60))
            for event in peer.pcm_events(second, 16000, 2, 1):
                await client.write_event(event)
            await client.write_event(AudioStop().event())
            rest = [await asyncio.wait_for(client.read_event(), 60)]
            while rest[-1].type != "transcript-stop":
                rest.append(await asyncio.wait_for(client.read_event(), 60))
            return early, rest

    early, rest = run(go())
    assert [e.type for e in early] == ["transcript-start", "transcript-chunk"]
    assert "forward" in early[1].data["text"]
    assert [e.type for e in rest][-2:] == ["transcript", "transcript-stop"]
    chunks = "".join(e.data["text"] for e in [*early, *rest] if e.type == "transcript-chunk")
    final = rest[-2].data["text"]
    assert chunks.split() == final.split() and len(final.split()) > len(early[1].data[
        "text"].split())


def test_audio_far_over_the_limits_gets_a_bounded_transcript(server, speech_folder):
    clip = peer.read_pcm16(speech_folder / "pocketsphinx__goforward.wav")
    long = clip * 16  # 45 s: far over vad.max_utterance_s (3 s) and wyoming.max_audio_s (5 s)
    started = time.monotonic()
    result = run(peer.transcribe(*where(server), long, timeout_s=120))
    assert result.text.strip() and time.monotonic() - started < 60
    assert result.text.split().count("forward") <= 2  # at most what 5 s (< 2 copies) holds
    assert server.wait_log("max_audio_s")


def test_synthesize_returns_speech_audio(server):
    spoken = run(peer.synthesize(*where(server), "Hello there. The kitchen light is on now."))
    kinds = [e.type for e in spoken.events]
    assert kinds[0] == "audio-start" and kinds[-1] == "audio-stop" and "audio-chunk" in kinds
    assert (spoken.rate, spoken.width, spoken.channels) == (22050, 2, 1)
    samples = np.frombuffer(spoken.pcm, dtype="<i2").astype(np.float32)
    seconds = len(samples) / spoken.rate
    assert 1.0 < seconds < 6.0
    assert np.sqrt(np.mean(samples ** 2)) > 300  # speech, not silence
    every = [AudioChunk.from_event(e) for e in spoken.events if e.type == "audio-chunk"]
    assert all(c.rate == 22050 and c.width == 2 and c.channels == 1 for c in every)


def test_streaming_synthesize_sends_the_first_clause_before_the_text_ends(server):
    async def go():
        async with AsyncTcpClient(*where(server)) as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk("The weather today is sunny. ").event())
            await client.write_event(SynthesizeChunk("Tomorrow it").event())
            first = await asyncio.wait_for(client.read_event(), 20)  # before any stop
            got = [first]
            while got[-1].type != "audio-stop":
                got.append(await asyncio.wait_for(client.read_event(), 20))
            await client.write_event(SynthesizeChunk(" will rain all day.").event())
            await client.write_event(Synthesize("The weather today is sunny. Tomorrow it "
                                                "will rain all day.").event())
            await client.write_event(SynthesizeStop().event())
            rest = []
            while not rest or rest[-1].type != "synthesize-stopped":
                rest.append(await asyncio.wait_for(client.read_event(), 20))
            return got, rest

    first, rest = run(go())
    assert first[0].type == "audio-start" and first[-1].type == "audio-stop"
    first_ms = sum(AudioChunk.from_event(e).seconds for e in first if e.type == "audio-chunk")
    assert 0.8 < first_ms < 4.0  # "The weather today is sunny." alone
    kinds = [e.type for e in rest]
    assert kinds.count("audio-start") == 1 == kinds.count("audio-stop")  # the backwards-
    assert kinds[-1] == "synthesize-stopped"  # compatible `synthesize` was not spoken twice


def test_intent_turn_ends_in_one_handled_with_its_conversation_id(server):
    event, _ = run(peer.handle(*where(server), "what time is it", "conv-1"))
    assert event.type == "handled"
    assert event.data["context"] == {"conversation_id": "conv-1"}
    hour = time.localtime().tm_hour % 12 or 12
    assert str(hour) in event.data["text"] or str((hour % 12) + 1) in event.data["text"]


def test_model_turn_from_the_tiny_model(server):
    event, _ = run(peer.handle(*where(server), "tell me about the moon", "conv-2"))
    assert event.type == "handled" and event.data["text"].strip()
    assert server.wait_log("tell me about the moon", "(local,")


def test_several_clients_at_once_each_with_its_own_recognizer(server, speech_folder):
    refs = {c.path.name: c.reference for c in read_manifest(speech_folder)}
    names = [*CLIPS, "pocketsphinx__cards_001.wav"]

    async def together():
        return await asyncio.gather(*(peer.transcribe(*where(server),
                                                      peer.read_pcm16(speech_folder / n))
                                      for n in names),
                                    peer.handle(*where(server), "what day is it"),
                                    peer.synthesize(*where(server), "One moment please."))

    *heard, (handled, _), spoken = run(together())
    alone = [ALONE.get(n) or run(peer.transcribe(*where(server),
                                                 peer.read_pcm16(speech_folder / n))).text
             for n in names]
    assert [h.text for h in heard] == alone  # nobody's audio reached another's recognizer
    assert corpus_wer([(refs[n], h.text) for n, h in zip(names, heard, strict=True)]) < 0.5
    assert handled.type == "handled" and spoken.pcm


def _connect(server) -> socket.socket:
    return socket.create_connection(where(server), timeout=10)


def _frame(kind: str, data: dict | None = None, payload: bytes = b"") -> bytes:
    header = {"type": kind, "version": "1.10.2"}
    body = json.dumps(data).encode() if data else b""
    if body:
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + body + payload


def _read_events(sock: socket.socket, count: int) -> list[dict]:
    reader = sock.makefile("rb")
    out = []
    for _ in range(count):
        line = reader.readline()
        if not line:
            break
        header = json.loads(line)
        data = header.get("data") or {}
        if header.get("data_length"):
            data.update(json.loads(reader.read(header["data_length"])))
        if header.get("payload_length"):
            reader.read(header["payload_length"])
        out.append({"type": header["type"], "data": data})
    return out


def test_malformed_and_unknown_events_get_an_error_and_the_connection_goes_on(server):
    with _connect(server) as sock:
        sock.sendall(b"this is not json\n")
        sock.sendall(_frame("no-such-event", {"x": 1}))  # unknown: dropped, as the spec says
        sock.sendall(_frame("synthesize", {"voice": {}}))  # no text
        sock.sendall(_frame("audio-start", {"rate": 16000, "width": 3, "channels": 1}))
        sock.sendall(_frame("audio-stop"))
        sock.sendall(_frame("describe"))
        events = _read_events(sock, 5)
    kinds = [e["type"] for e in events]
    assert kinds == ["error", "error", "error", "error", "info"], events
    texts = [e["data"]["text"] for e in events[:4]]
    assert "not JSON" in texts[0] and "`text`" in texts[1] and "width 3" in texts[2]
    assert "audio-stop without audio" in texts[3]


def test_an_unreadable_frame_ends_only_that_connection(server):
    with _connect(server) as sock:
        sock.sendall(json.dumps({"type": "audio-chunk", "payload_length": 10 ** 9}).encode()
                     + b"\n")
        events = _read_events(sock, 2)
    assert [e["type"] for e in events] == ["error"] and "payload_length" in events[0]["data"][
        "text"]
    with _connect(server) as sock:
        sock.sendall(b"x" * 200_000)  # a header line with no end
        events = _read_events(sock, 2)
    assert [e["type"] for e in events] == ["error"]
    assert run(peer.describe(*where(server))).asr


def test_100_kb_of_text_is_refused_in_one_sentence(server):
    spoken = run(peer.synthesize(*where(server), "All work and no play. " * 4700))
    assert [e.type for e in spoken.events] == ["error"]
    assert "wyoming.max_text_chars" in spoken.events[0].data["text"]
    event, _ = run(peer.handle(*where(server), "why " * 30000))
    assert event.type == "error" and event.data["code"] == "too-long"
    assert run(peer.synthesize(*where(server), "Still here.")).pcm


def test_too_many_clients_are_told_so(server):
    socks = [_connect(server) for _ in range(5)]
    try:
        time.sleep(0.5)
        with _connect(server) as extra:
            events = _read_events(extra, 2)
        assert [e["type"] for e in events] == ["error"] and events[0]["data"]["code"] == "busy"
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert run(peer.describe(*where(server))).tts


def test_clients_that_leave_mid_request_leak_nothing(server, speech_folder):
    pcm = peer.read_pcm16(speech_folder / "pocketsphinx__cards_001.wav")
    idle = server.sockets()

    async def leave_mid_audio():
        async with AsyncTcpClient(*where(server)) as client:
            await client.write_event(AudioStart(16000, 2, 1).event())
            for event in peer.pcm_events(pcm[:len(pcm) // 2], 16000, 2, 1):
                await client.write_event(event)

    async def leave_mid_speech():
        reader, writer = await asyncio.open_connection(*where(server))
        await async_write_event(Synthesize("A long answer. " * 40).event(), writer)
        await reader.read(4096)
        writer.transport.abort()

    async def leave_mid_answer():
        reader, writer = await asyncio.open_connection(*where(server))
        await async_write_event(Event("transcript", {"text": "tell me a story"}), writer)
        writer.close()

    def settled():
        deadline = time.monotonic() + 10
        last = None
        while time.monotonic() < deadline:
            now = (server.fds(), server.threads())
            if now == last:
                return now
            last = now
            time.sleep(0.5)
        return last

    def round_of_clients():
        run(leave_mid_audio())
        run(leave_mid_speech())
        run(leave_mid_answer())
        # the leavers' connections are gone (else wyoming.max_clients refuses the next three)
        assert server.wait_idle(idle)

        async def three_at_once():
            await asyncio.gather(*(peer.transcribe(*where(server), pcm) for _ in range(3)))

        run(three_at_once())

    round_of_clients()
    before = settled()
    round_of_clients()
    after = settled()
    assert after == before, f"(fds, threads) {before} -> {after}"
    assert run(peer.transcribe(*where(server), pcm)).text


def test_a_bad_uri_or_a_taken_port_is_one_sentence(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgevoice", "wyoming", "--uri",
                          "http://localhost"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "edgevoice: error: Wyoming URI 'http://localhost' is not tcp://HOST:PORT (e.g. "
        "tcp://0.0.0.0:10700); fix --uri or `wyoming.uri`"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text("llm:\n  max_tokens: 4\n")
        out = subprocess.run([sys.executable, "-m", "edgevoice", "wyoming", "--config", str(cfg),
                              "--uri", f"tcp://127.0.0.1:{port}"], capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot listen on tcp://127.0.0.1:{port}" in out.stderr


def _serve(cfg: Path, *args: str):
    return peer.wyoming_server(["-v", "--config", str(cfg), "--uri", "tcp://127.0.0.1:0", *args])


@pytest.mark.skipif(llama_server_missing() is not None, reason=str(llama_server_missing()))
def test_turns_over_a_real_remote_llama_cpp_server(tiny_gguf, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n  temperature: 0.0\n")
    with llama_server(tiny_gguf, alias="tiny") as remote, _serve(
            cfg, "--remote", remote.url, "--remote-model", "tiny", "--policy", "remote") as server:
        event, _ = run(peer.handle(*where(server), "tell me a story", "c1"))
        assert event.type == "handled" and event.data["text"].strip()
        assert server.wait_log("tell me a story", "(remote,")
        event, _ = run(peer.handle(*where(server), "what time is it", "c1"))
        assert event.type == "handled" and server.wait_log("what time is it", "(intent:time,")


def test_a_dead_remote_fails_over_to_the_local_model(tiny_gguf, tmp_path):
    with FaultServer() as dead:
        url = dead.url
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 8\n")
    with _serve(cfg, "--remote", url, "--remote-model", "fault-model", "--policy", "remote",
                "--llm-model", str(tiny_gguf)) as server:
        event, took_ms = run(peer.handle(*where(server), "hello there", "c1"))
        assert event.type == "handled" and event.data["text"].strip()
        assert server.wait_log("hello there", "(local,") and took_ms < 5000


def test_each_conversation_id_has_its_own_bounded_history(tmp_path):
    with FaultServer() as remote:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("llm:\n  max_tokens: 8\n  policy: remote\nwyoming:\n  conversations: 2\n"
                       f"remotes:\n  lan:\n    base_url: {remote.url}\n    model: fault-model\n")
        with _serve(cfg) as server:
            for cid, text in (("A", "my name is alice"), ("B", "my name is bob"),
                              ("A", "what is my name"), ("C", "hello"), ("B", "who am i")):
                event, _ = run(peer.handle(*where(server), text, cid))
                assert event.type == "handled" and event.data["context"] == {
                    "conversation_id": cid}
        said = [[m["content"] for m in r.body["messages"] if m["role"] == "user"]
                for r in remote.requests if r.path.endswith("/chat/completions")]
    assert said[2] == ["my name is alice", "what is my name"]  # A's history, not B's
    assert said[3] == ["hello"]  # C is new; it pushes out B, the least recently used
    assert said[4] == ["who am i"]  # B was forgotten (wyoming.conversations: 2)


def test_odd_chunk_sizes_and_widths_are_heard_the_same(speech_folder):
    """In-process: frames split across chunks, 8- and 32-bit samples, a format change mid-way."""
    from edgevoice.asr.pocketsphinx_backend import PocketsphinxRecognizer
    from edgevoice.config import Config
    from edgevoice.wyoming.asr import Transcription

    pcm = peer.read_pcm16(speech_folder / "pocketsphinx__cards_001.wav")
    recognizer = PocketsphinxRecognizer(16000)
    try:
        def hear(pieces):
            t = Transcription(Config(), recognizer, 60.0)
            for data, fmt in pieces:
                t.feed(data, fmt)
            text, _ = t.finish()
            recognizer.reset()
            return text

        whole = hear([(pcm, (16000, 2, 1))])
        assert whole.strip()
        odd = 1001  # every chunk splits a sample in two
        assert hear([(pcm[i:i + odd], (16000, 2, 1)) for i in range(0, len(pcm), odd)]) == whole
        samples = np.frombuffer(pcm, dtype="<i2")
        wide = (samples.astype(np.int32) << 16).astype("<i4").tobytes()
        assert hear([(wide, (16000, 4, 1))]) == whole
        half = len(pcm) // 2
        mixed = hear([(pcm[:half], (16000, 2, 1)), (wide[2 * half:], (16000, 4, 1))])
        assert mixed == whole  # the format changed mid-stream, the words did not
        narrow = ((samples >> 8) + 128).astype(np.uint8).tobytes()
        assert corpus_wer([(whole, hear([(narrow, (16000, 1, 1))]))]) <= 0.34  # 8-bit: lossy
    finally:
        recognizer.close()
