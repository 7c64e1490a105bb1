"""Command line: parse -> config -> call. User mistakes end in one sentence and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from edgevoice import __version__
from edgevoice.errors import UserError

log = logging.getLogger("edgevoice")


class _NoticeFormatter(logging.Formatter):
    """stderr without -v is for a person: `edgevoice: warning: one sentence`, with no
    timestamp, logger name or traceback (``-v``/``-vv`` bring the developer format back)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info or record.exc_text or record.stack_info:
            message += " (run with -v for the details)"
        level = ("error" if record.levelno >= logging.ERROR else
                 "warning" if record.levelno >= logging.WARNING else record.levelname.lower())
        return f"edgevoice: {level}: {message}"


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NoticeFormatter() if verbosity <= 0 else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])  # a no-op where logging is set up


def _load(args):
    from edgevoice.config import Paths, load_config

    cfg, source = load_config(args.config)
    if source:
        log.info("config: %s", source)
    return cfg, Paths.from_config(cfg)


def _emit(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# ---------------------------------------------------------------------------------------------
# transcribe / listen
# ---------------------------------------------------------------------------------------------


def cmd_transcribe(args) -> int:
    from edgevoice.asr.select import make_recognizer
    from edgevoice.audio.filestream import stream_audio
    from edgevoice.audio.wavfile import check_audio_file
    from edgevoice.ear.transcriber import StreamingTranscriber, transcribe_chunks

    cfg, paths = _load(args)
    for name in args.files:  # a bad file fails now, not after the recognizer has loaded
        check_audio_file(name)
    recognizer = make_recognizer(cfg.asr, paths, cfg.audio.sample_rate)
    for name in args.files:
        transcriber = StreamingTranscriber(cfg.vad, recognizer, cfg.asr.partial_interval_ms)
        started = time.perf_counter()
        heard = [0.0]  # ms: streamed from disk, never the whole file in memory (issue 16)

        def blocks(name=name, heard=heard):
            for chunk in stream_audio(name, cfg.audio.sample_rate, cfg.audio.block_ms):
                heard[0] = chunk.end_ms
                yield chunk

        for utt in transcribe_chunks(blocks(), transcriber):
            start, end = round(utt.start_ms / 1000, 3), round(utt.end_ms / 1000, 3)
            if args.json:
                _emit({"file": name, "start": start, "end": end, "text": utt.text})
            else:
                print(f"{name}\t{start:.2f}\t{end:.2f}\t{utt.text}", flush=True)
        elapsed = time.perf_counter() - started
        log.info("%s: %.2f s of audio in %.2f s (real-time factor %.3f)", name,
                 heard[0] / 1000, elapsed, elapsed / max(heard[0] / 1000, 1e-9))
    return 0


def _asr_notice(recognizer) -> str:
    from edgevoice.asr.vosk_backend import DEFAULT_VOSK_MODEL

    if recognizer.name == "pocketsphinx":
        return (f"speech recognition: pocketsphinx (bundled model); for better accuracy run "
                f"`edgevoice models pull {DEFAULT_VOSK_MODEL}`")
    return f"speech recognition: vosk ({recognizer.model_folder})"


def cmd_listen(args) -> int:
    import queue

    from edgevoice.asr.select import make_recognizer
    from edgevoice.audio.devices import Microphone
    from edgevoice.ear.transcriber import Partial, StreamingTranscriber, Utterance

    cfg, paths = _load(args)
    device = args.device if args.device is not None else cfg.audio.input_device
    recognizer = make_recognizer(cfg.asr, paths, cfg.audio.sample_rate)
    transcriber = StreamingTranscriber(cfg.vad, recognizer, cfg.asr.partial_interval_ms)
    tty = sys.stdout.isatty() and not args.json
    print(_asr_notice(recognizer), file=sys.stderr)
    deadline = time.monotonic() + args.duration if args.duration else None

    def show(event) -> None:
        if isinstance(event, Partial):
            if args.json:
                _emit({"event": "partial", "start": round(event.start_ms / 1000, 3),
                       "text": event.text})
            elif tty:
                print(f"\r\033[K… {event.text}", end="", flush=True)
        elif isinstance(event, Utterance):
            start, end = round(event.start_ms / 1000, 3), round(event.end_ms / 1000, 3)
            if args.json:
                _emit({"event": "utterance", "start": start, "end": end, "text": event.text})
            else:
                print(f"\r\033[K{event.text}" if tty else event.text, flush=True)

    with Microphone(device, rate=cfg.audio.sample_rate, block_ms=cfg.audio.block_ms) as mic:
        changes: queue.SimpleQueue = queue.SimpleQueue()  # from the device watch's thread
        watch = _device_watch(mic, None)
        watch.start(changes.put)
        restarts = 0
        try:  # from here on, Ctrl+C (SIGINT) is a clean stop
            print("listening — press Ctrl+C to stop", file=sys.stderr, flush=True)
            if args.json:
                _emit({"event": "listening",
                       "device": str(device) if device is not None else None})
            while deadline is None or time.monotonic() < deadline:
                chunk = mic.read(timeout=0.5)
                while not changes.empty():
                    change = changes.get()
                    (log.info if change.ok else log.warning)("%s", change.message)
                    if args.json:
                        _emit({"event": "device" if change.ok else "error", "device": "input",
                               "ok": change.ok, "message": change.message})
                if mic.restarts != restarts:  # reopened: an utterance cut in two is dropped
                    restarts = mic.restarts
                    list(transcriber.flush())
                if chunk is None:
                    continue
                for event in transcriber.feed(chunk):
                    show(event)
        except KeyboardInterrupt:
            pass
        finally:
            watch.close()
        for event in transcriber.flush():
            show(event)
        if mic.overflows:
            log.warning("input overflowed %d times: audio was lost (machine too busy?)",
                        mic.overflows)
    return 0


# ---------------------------------------------------------------------------------------------
# ask / say / run
# ---------------------------------------------------------------------------------------------


def cmd_ask(args) -> int:
    from edgevoice.agent.assemble import make_router, prepare_targets
    from edgevoice.agent.brain import Brain
    from edgevoice.agent.intents import match_intent
    from edgevoice.agent.turn import Turn
    from edgevoice.tts.clauses import ClauseSplitter

    cfg, paths = _load(args)
    # One piece of advice, never two: a model that was named (flag or config) but is missing
    # is an error naming its own fix; with none at all the reply says how to get one, so the
    # loader's notice (the daemon's) is not printed beside it.
    named = args.llm_model or cfg.llm.model
    router = make_router(cfg, paths, args.llm_model, require_model=bool(named),
                         remote_url=args.remote, remote_model=args.remote_model,
                         policy=args.policy, warn_missing=False)
    brain = Brain(router, cfg.llm, apology=None)  # no spoken apology: the failure is reported
    try:
        if router.policy != "local" and not match_intent(args.text):
            prepare_targets(router, paths, warn=False)  # the turn's own failure says it once
        turn = Turn(args.text)
        turn.metrics.speech_end = time.monotonic()  # for `ask`, latency counts from the text
        turn.metrics.mark("asr_final")
        decision = brain.decide(args.text)
        turn.metrics.target, turn.metrics.route_reason = decision.target, decision.reason
        deltas = [decision.reply] if decision.reply is not None else brain.llm_stream(turn)
        splitter = ClauseSplitter()
        try:
            for delta in deltas:
                turn.reply += delta
                if splitter.push(delta):
                    turn.metrics.mark("first_clause")
                if not args.json:
                    print(delta, end="", flush=True)
        except KeyboardInterrupt:
            turn.cancel.set()
            turn.interrupted = True
        if splitter.flush():
            turn.metrics.mark("first_clause")
        turn.spoken = turn.reply
        brain.finish(turn, decision)
        if args.json:
            _emit(turn.to_event())
        elif turn.reply or not turn.metrics.error:
            print(flush=True)
    finally:
        router.close()
    if turn.metrics.error:  # no target answered, or the answer was cut: the operation failed
        print(f"edgevoice: error: {turn.metrics.error}", file=sys.stderr)
        return 1
    return 0


def _speak_clauses(synth, text: str):
    from edgevoice.tts.clauses import ClauseSplitter

    splitter = ClauseSplitter()
    for clause in [*splitter.push(text), *splitter.flush()]:
        yield synth.synthesize(clause)


def cmd_say(args) -> int:
    from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer

    cfg, _ = _load(args)
    synth = Pyttsx3Synthesizer(cfg.tts)
    try:
        if args.output:
            from edgevoice.audio.wavfile import WavWriter

            with WavWriter(args.output, synth.format.rate) as writer:
                for audio in _speak_clauses(synth, args.text):
                    writer.write(audio)
            return 0
        from edgevoice.audio.devices import Speaker

        device = args.device if args.device is not None else cfg.audio.output_device
        with Speaker(device, rate=synth.format.rate) as speaker:
            for audio in _speak_clauses(synth, args.text):
                speaker.write(audio)
            speaker.drain(timeout=60)
    finally:
        synth.close()
    return 0


def _router_for_targets(args):
    from edgevoice.agent.assemble import make_router, prepare_targets

    cfg, paths = _load(args)
    router = make_router(cfg, paths, args.llm_model, remote_url=args.remote,
                         remote_model=args.remote_model, policy=args.policy,
                         warn_missing=False)  # the table says it: no notice beside it
    prepare_targets(router, paths, calibrate_local=True, warn=False)
    router.wait_for_background(10.0)  # the table reports what the warm-ups found
    for target in router.remotes:
        router.healthy(target)
    return router


def cmd_targets(args) -> int:
    router = _router_for_targets(args)
    try:
        rows = router.status()
        if args.json:
            _emit({"policy": router.policy, "budget_ms": router.budget_ms, "targets": rows})
            return 0
        print(f"policy {router.policy}, first-clause budget {router.budget_ms:.0f} ms")
        if not rows:
            print("no targets: no local model and no remote configured")
        for r in rows:
            print(_target_line(r))
        if rows and router.local is None:
            from edgevoice.agent.intents import GET_MODEL_COMMAND

            print(f"{'local':10s} none: no language model (`{GET_MODEL_COMMAND}` gets one)")
    finally:
        router.close()
    return 0


# The circuit breaker's states, as a user reads them (`--json` keeps the state names).
_HEALTH_WORDS = {"closed": "healthy", "open": "down, skipped for now",
                 "half-open": "down, retried on the next turn"}
_FIGURES = (("prefill_tps", "prefill", "tok/s"), ("decode_tps", "decode", "tok/s"),
            ("overhead_ms", "overhead", "ms"), ("rtt_ms", "round trip", "ms"))


def _target_line(row: dict) -> str:
    """One `edgevoice targets` row in words: health, and the figures measured so far."""
    e = row["estimates"]
    measured = ", ".join(f"{label} {e[key]:g} {unit}" for key, label, unit in _FIGURES
                         if e.get(key) is not None)
    missing = ", ".join(label for key, label, _ in _FIGURES if e.get(key) is None)
    if not measured:
        figures = "speed not measured yet"
    elif missing:
        figures = f"{measured}; {missing} not measured yet"
    else:
        figures = measured
    health = _HEALTH_WORDS.get(row["circuit"], row["circuit"])
    if row["circuit"] == "closed" and row["last_error"]:  # failed, but not often enough to skip
        health = "up, but its last request failed"
    return (f"{row['name']:10s} {row['kind']:6s} {row['model'] or 'unknown model':30s} "
            f"{health}: {figures}"
            + (f"; last error: {row['last_error']}" if row["last_error"] else ""))


def cmd_bench_targets(args) -> int:
    from edgevoice.bench import bench_targets, print_rows

    router = _router_for_targets(args)
    try:
        rows = bench_targets(router, args.requests,
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        router.close()
    if args.json:
        _emit({"targets": rows})
    else:
        print_rows(rows)
    return 0


def _human_event(event: dict) -> None:
    kind = event["event"]
    if kind == "transcript":
        print(f"you:   {event['text']}", flush=True)
    elif kind == "turn":
        lat = event["latency_ms"].get("first_audio")
        extra = f"  [{event['target']}" + (f", first audio {lat:.0f} ms]" if lat else "]")
        said = event.get("spoken", event["reply"]) if event.get("interrupted") else event["reply"]
        cut = " (interrupted)" if event.get("interrupted") else ""
        print(f"agent: {said.strip()}{cut}{extra}", flush=True)
    elif kind == "error" and "device" not in event:  # a lost device is logged already
        print(f"edgevoice: error: {event['message']}", file=sys.stderr, flush=True)
    elif kind == "device":
        print(f"edgevoice: {event['message']}", file=sys.stderr, flush=True)
    elif kind == "ignored":
        log.info("ignored: %s", event["reason"])


def _device_watch(source, output):
    """A watch over the live microphone and speaker (devices that come and go)."""
    from edgevoice.agent.outputs import DeviceOutput
    from edgevoice.audio.devices import Microphone
    from edgevoice.audio.watch import DeviceWatch

    watch = DeviceWatch()
    if isinstance(source, Microphone):
        watch.add(source, "input")
    if isinstance(output, DeviceOutput):
        watch.add(output.speaker, "output")
    return watch


def cmd_run(args) -> int:
    import asyncio
    import signal

    from edgevoice.signals import Signals

    signals = Signals()
    signals.early()  # from the first moment: SIGTERM unwinds (the socket goes), SIGHUP waits

    from edgevoice.agent.assemble import make_router, prepare_targets
    from edgevoice.agent.brain import Brain
    from edgevoice.agent.manager import TurnManager
    from edgevoice.agent.outputs import DeviceOutput, FileOutput
    from edgevoice.asr.select import make_recognizer
    from edgevoice.control.server import ControlServer, run_agent
    from edgevoice.ear.activation import make_transcriber
    from edgevoice.ear.turn_detector import TextHinted, load_turn_detector
    from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer

    cfg, paths = _load(args)
    emit = _emit if args.json else _human_event
    router = make_router(cfg, paths, args.llm_model, remote_url=args.remote,
                         remote_model=args.remote_model, policy=args.policy)
    synth = source = output = control = None
    try:
        if args.input:  # a bad input file fails before any model loads
            from edgevoice.audio.filesource import RealtimeFileSource

            source = RealtimeFileSource(args.input, cfg.audio.sample_rate, cfg.audio.block_ms)
        # Bound before anything slow, so a second daemon is refused at once.
        control = ControlServer.for_run(cfg, args.config, file_mode=bool(args.input))
        prepare_targets(router, paths)
        synth = Pyttsx3Synthesizer(cfg.tts)
        synth.warm_up()
        recognizer = make_recognizer(cfg.asr, paths, cfg.audio.sample_rate)
        if not args.json:
            print(_asr_notice(recognizer), file=sys.stderr)
        detector = load_turn_detector(cfg.turn, paths.models)
        # words that rarely end a sentence ("and", "the") cap its verdict: fewer cut-offs on
        # the held-out pause set at the same delay (benchmarks/turn_eval.py)
        transcriber = make_transcriber(cfg, recognizer,
                                       TextHinted(detector) if detector is not None else None)
        if not args.input:
            from edgevoice.audio.devices import Microphone

            device = args.device if args.device is not None else cfg.audio.input_device
            source = Microphone(device, rate=cfg.audio.sample_rate,
                                block_ms=cfg.audio.block_ms).open()
        if args.output:
            output = FileOutput(args.output, synth.format.rate)
            if args.input:
                output.duration_ms = source.duration_ms
        else:
            out_device = (args.output_device if args.output_device is not None
                          else cfg.audio.output_device)
            output = DeviceOutput(out_device, synth.format.rate)
        from edgevoice.ear.echo import cancel_echo

        # The first stage after the microphone: the speaker's own voice taken out of it.
        ear_source = cancel_echo(cfg.audio.echo_cancel, source, getattr(output, "speaker", None),
                                 records_from_device=not args.input)
        words = getattr(ear_source, "words", None)
        if words is not None and cfg.audio.barge_in_words:
            transcriber.words_audio = words.audio  # a barge-in's first words, not suppressed
        manager = TurnManager(
            source=ear_source, transcriber=transcriber, brain=Brain(router, cfg.llm),
            synthesizer=synth, output=output, agent=cfg.agent, emit=emit,
            stop_at_input_end=bool(args.input), devices=_device_watch(source, output),
            first_clause_max_words=cfg.tts.first_clause_max_words,
        )

        async def main_loop() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, manager.stop)
            loop.add_signal_handler(signal.SIGUSR1, manager.push_to_talk_signal, True)
            loop.add_signal_handler(signal.SIGUSR2, manager.push_to_talk_signal, False)
            signals.on_loop(loop, manager, control, cfg, args.config)  # SIGHUP = ctl reload
            if not cfg.wyoming.enabled:
                await run_agent(manager, control)
                return
            from edgevoice.wyoming.cli import beside_agent

            async with beside_agent(cfg, paths, router, synth, manager):
                await run_agent(manager, control)

        if not args.json:
            print("ready — speak; Ctrl+C to stop", file=sys.stderr, flush=True)
        asyncio.run(main_loop())
    finally:
        for part in (output, source, synth, control):
            if part is not None:
                part.close()
        router.close()
    return 0


# ---------------------------------------------------------------------------------------------
# devices / config
# ---------------------------------------------------------------------------------------------


def cmd_devices(args) -> int:
    import dataclasses

    from edgevoice.audio.devices import list_devices, server_devices

    devices = list_devices()
    server = server_devices(devices)
    if args.json:
        _emit({"devices": [dataclasses.asdict(d) for d in devices],
               "server": dataclasses.asdict(server) if server is not None else None})
        return 0
    if not devices:
        print("no audio devices found (is PulseAudio/PipeWire running, or ALSA configured?)")
        return 0
    for d in devices:
        mark = ("<" if d.is_default_input else " ") + (">" if d.is_default_output else " ")
        print(f"{mark} {d.index:3d}  {d.name}  (in {d.max_input_channels}, "
              f"out {d.max_output_channels}, {d.default_samplerate:.0f} Hz, {d.hostapi})")
    if server is not None:
        print(f"\nsound server {server.describe()}, reached through the `pulse` device; "
              "pick these by name or part of it:")
        for title, kind, mark in (("sources (input)", "input", "< "), ("sinks (output)",
                                                                      "output", " >")):
            print(f"  {title}:")
            for s in server.devices(kind):
                extra = ", monitor of a sink" if s.monitor else ""
                about = f"  {s.description}" if s.description else ""
                print(f"  {mark if s.is_default else '  '}  {s.name}{about}  ({s.channels} ch, "
                      f"{s.rate} Hz{extra})")
            if not server.devices(kind):
                print("      none")
    print("\n< default input, > default output; pick one by index or name with --device / "
          "--output-device or `audio.input_device` / `audio.output_device`")
    return 0


def cmd_config_check(args) -> int:
    """Every problem of the file (each with key and line), and model settings that name
    nothing; a catalog model that is only not downloaded yet is a warning."""
    from edgevoice.config import Paths, check_config, find_config_path, read_config_text
    from edgevoice.modelstore.resolve import check_model_setting

    found = find_config_path(args.path or args.config)
    if found is None:
        print("no config file: built-in defaults are used (OK)")
        return 0
    checked = check_config(read_config_text(found), str(found))
    said = [(p.line or 0, "error", str(p)) for p in checked.problems]
    paths = Paths.from_config(checked.config)
    for key, kind in (("llm.model", "llm"), ("asr.vosk_model", "asr")):
        section, name = key.split(".")
        value = getattr(getattr(checked.config, section), name)
        verdict = check_model_setting(key, value, kind, paths) if value else None
        if verdict is not None:
            line = checked.lines.get(key)
            said.append((line or 0, verdict[0], f"{found}, line {line}: {verdict[1]}" if line
                         else f"{found}: {verdict[1]}"))
    for _, level, text in sorted(said, key=lambda s: s[0]):
        print(f"edgevoice: {level}: {text}", file=sys.stderr)
    errors = sum(level == "error" for _, level, _ in said)
    if errors:
        print(f"{found}: {errors} problem{'s' * (errors > 1)} to fix", file=sys.stderr)
        return 2
    warnings = len(said)
    print(f"{found}: OK" + (f" ({warnings} warning{'s' * (warnings > 1)} above)" if warnings
                            else ""))
    return 0


def cmd_config_show(args) -> int:
    import yaml

    from edgevoice.config import config_to_dict, load_config

    cfg, source = load_config(args.config)
    data = config_to_dict(cfg)
    if args.json:
        _emit({"source": str(source) if source else None, "config": data})
    else:
        print(f"# effective config; source: {source or 'built-in defaults'}")
        print(yaml.safe_dump(data, sort_keys=False, width=100), end="")
    return 0


# ---------------------------------------------------------------------------------------------


def _remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL",
                   help="an OpenAI-compatible endpoint, e.g. http://host:8000/v1 (named 'remote')")
    p.add_argument("--remote-model", metavar="NAME", help="the model id the remote serves")
    p.add_argument("--policy", choices=["local", "remote", "auto"],
                   help="where the language model runs (overrides llm.policy)")


def build_parser() -> argparse.ArgumentParser:
    def global_options(p: argparse.ArgumentParser, default) -> None:
        # Accepted before and after the subcommand; SUPPRESS keeps a subcommand's parse from
        # overwriting what was given before it.
        p.add_argument("-v", "--verbose", action="count", default=0 if default else SUPPRESS,
                       help="more log detail (-vv for debug)")
        p.add_argument("--config", metavar="PATH", default=None if default else SUPPRESS,
                       help="config file (default: $EDGEVOICE_CONFIG or the per-user file)")

    SUPPRESS = argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, default=False)
    parser = argparse.ArgumentParser(
        prog="edgevoice",
        description="An offline voice agent: listens, understands and answers out loud.")
    global_options(parser, default=True)
    parser.add_argument("--version", action="version", version=f"edgevoice {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("transcribe", parents=[common], help="transcribe audio files")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG)")
    p.add_argument("--json", action="store_true", help="one JSON object per utterance")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("listen", parents=[common], help="transcribe the microphone live")
    p.add_argument("--device", help="input device index or name (see `edgevoice devices`)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("run", parents=[common], help="start the voice agent")
    p.add_argument("--input", metavar="IN.wav",
                   help="play this recording in real time as the microphone (file mode)")
    p.add_argument("--output", metavar="OUT.wav",
                   help="write what the agent says here, on the input's timeline")
    p.add_argument("--device", help="input device index or name")
    p.add_argument("--output-device", help="output device index or name")
    p.add_argument("--llm-model", metavar="PATH", help="GGUF model file (overrides llm.model)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    _remote_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ask", parents=[common], help="ask a question in text, stream the answer")
    p.add_argument("text")
    p.add_argument("--llm-model", metavar="PATH", help="GGUF model file (overrides llm.model)")
    p.add_argument("--json", action="store_true", help="print the turn as one JSON object")
    _remote_options(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("targets", parents=[common],
                       help="LLM targets: health and measured latency")
    p.add_argument("--llm-model", metavar="PATH", help="GGUF model file (overrides llm.model)")
    p.add_argument("--json", action="store_true")
    _remote_options(p)
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("bench", parents=[common], help="benchmarks that print figures")
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    b = bsub.add_parser("targets", parents=[common],
                        help="time to first token, tokens/s, router overhead per target")
    b.add_argument("-n", "--requests", type=int, default=5, help="requests per target")
    b.add_argument("--llm-model", metavar="PATH", help="GGUF model file (overrides llm.model)")
    b.add_argument("--json", action="store_true")
    _remote_options(b)
    b.set_defaults(func=cmd_bench_targets)
    __import__("edgevoice.latency.cli", fromlist=["_"]).add_parser(bsub, common)

    p = sub.add_parser("say", parents=[common], help="speak a text")
    p.add_argument("text")
    p.add_argument("-o", "--output", metavar="OUT.wav", help="write a WAV instead of playing")
    p.add_argument("--device", help="output device index or name")
    p.set_defaults(func=cmd_say)

    # -- more subcommands register here (one call per module) --
    __import__("edgevoice.modelstore.cli", fromlist=["_"]).add_models_parser(sub, common)
    __import__("edgevoice.doctor", fromlist=["_"]).add_doctor_parser(sub, common)
    __import__("edgevoice.control.cli", fromlist=["_"]).register(sub, common)
    __import__("edgevoice.tray", fromlist=["_"]).register(sub, common)
    __import__("edgevoice.wyoming.cli", fromlist=["_"]).register(sub, common)

    p = sub.add_parser("devices", parents=[common], help="list audio devices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("config", parents=[common], help="check or show the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", parents=[common], help="validate a config file")
    c.add_argument("path", nargs="?", help="file to check (default: the effective config file)")
    c.set_defaults(func=cmd_config_check)
    c = csub.add_parser("show", parents=[common], help="print the effective configuration")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config_show)
    __import__("edgevoice.packaging_files", fromlist=["_"]).register(sub, common, csub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"edgevoice: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
