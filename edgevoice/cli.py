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


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


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
    from edgevoice.audio.wavfile import iter_chunks, read_audio
    from edgevoice.transcriber import StreamingTranscriber, transcribe_chunks

    cfg, paths = _load(args)
    recognizer = make_recognizer(cfg.asr, paths, cfg.audio.sample_rate)
    for name in args.files:
        audio = read_audio(name, cfg.audio.sample_rate)
        transcriber = StreamingTranscriber(cfg.vad, recognizer, cfg.asr.partial_interval_ms)
        started = time.perf_counter()
        for utt in transcribe_chunks(iter_chunks(audio, cfg.audio.block_ms), transcriber):
            start, end = round(utt.start_ms / 1000, 3), round(utt.end_ms / 1000, 3)
            if args.json:
                _emit({"file": name, "start": start, "end": end, "text": utt.text})
            else:
                print(f"{name}\t{start:.2f}\t{end:.2f}\t{utt.text}", flush=True)
        elapsed = time.perf_counter() - started
        log.info("%s: %.2f s of audio in %.2f s (real-time factor %.3f)", name,
                 audio.duration_ms / 1000, elapsed, elapsed / max(audio.duration_ms / 1000, 1e-9))
    return 0


def _asr_notice(recognizer) -> str:
    from edgevoice.asr.vosk_backend import DEFAULT_VOSK_MODEL

    if recognizer.name == "pocketsphinx":
        return (f"speech recognition: pocketsphinx (bundled model); for better accuracy run "
                f"`edgevoice models pull {DEFAULT_VOSK_MODEL}`")
    return f"speech recognition: vosk ({recognizer.model_folder})"


def cmd_listen(args) -> int:
    from edgevoice.asr.select import make_recognizer
    from edgevoice.audio.devices import Microphone
    from edgevoice.transcriber import Partial, StreamingTranscriber, Utterance

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
        print("listening — press Ctrl+C to stop", file=sys.stderr, flush=True)
        if args.json:
            _emit({"event": "listening", "device": str(device) if device is not None else None})
        try:
            while deadline is None or time.monotonic() < deadline:
                chunk = mic.read(timeout=0.5)
                if chunk is None:
                    continue
                for event in transcriber.feed(chunk):
                    show(event)
        except KeyboardInterrupt:
            pass
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
    router = make_router(cfg, paths, args.llm_model, require_model=args.llm_model is not None,
                         remote_url=args.remote, remote_model=args.remote_model,
                         policy=args.policy)
    brain = Brain(router, cfg.llm)
    try:
        if router.policy != "local" and not match_intent(args.text):
            prepare_targets(router, paths)
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
        else:
            print(flush=True)
    finally:
        router.close()
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
                         remote_model=args.remote_model, policy=args.policy)
    prepare_targets(router, paths, calibrate_local=True)
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
            e = r["estimates"]
            print(f"{r['name']:10s} {r['kind']:6s} {r['model']:30s} {r['circuit']:9s} "
                  f"prefill {e['prefill_tps']} tok/s, decode {e['decode_tps']} tok/s, "
                  f"overhead {e['overhead_ms']} ms, rtt {e['rtt_ms']} ms"
                  + (f"  last error: {r['last_error']}" if r["last_error"] else ""))
    finally:
        router.close()
    return 0


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
    elif kind == "error":
        print(f"edgevoice: error: {event['message']}", file=sys.stderr, flush=True)
    elif kind == "ignored":
        log.info("ignored: %s", event["reason"])


def cmd_run(args) -> int:
    import asyncio
    import signal

    from edgevoice.activation import make_transcriber
    from edgevoice.agent.assemble import make_router, prepare_targets
    from edgevoice.agent.brain import Brain
    from edgevoice.agent.manager import TurnManager
    from edgevoice.agent.outputs import DeviceOutput, FileOutput
    from edgevoice.asr.select import make_recognizer
    from edgevoice.control.server import ControlServer, run_agent
    from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer

    cfg, paths = _load(args)
    emit = _emit if args.json else _human_event
    router = make_router(cfg, paths, args.llm_model, remote_url=args.remote,
                         remote_model=args.remote_model, policy=args.policy)
    synth = source = output = control = None
    try:
        # Bound before anything slow, so a second daemon is refused at once.
        control = ControlServer.for_run(cfg, args.config, file_mode=bool(args.input))
        prepare_targets(router, paths)
        synth = Pyttsx3Synthesizer(cfg.tts)
        synth.warm_up()
        recognizer = make_recognizer(cfg.asr, paths, cfg.audio.sample_rate)
        if not args.json:
            print(_asr_notice(recognizer), file=sys.stderr)
        transcriber = make_transcriber(cfg, recognizer)
        if args.input:
            from edgevoice.audio.filesource import RealtimeFileSource

            source = RealtimeFileSource(args.input, cfg.audio.sample_rate, cfg.audio.block_ms)
        else:
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
        manager = TurnManager(
            source=source, transcriber=transcriber, brain=Brain(router, cfg.llm),
            synthesizer=synth, output=output, agent=cfg.agent, emit=emit,
            stop_at_input_end=bool(args.input),
        )

        async def main_loop() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, manager.stop)
            loop.add_signal_handler(signal.SIGUSR1, manager.push_to_talk_signal, True)
            loop.add_signal_handler(signal.SIGUSR2, manager.push_to_talk_signal, False)
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

    from edgevoice.audio.devices import list_devices

    devices = list_devices()
    if args.json:
        _emit({"devices": [dataclasses.asdict(d) for d in devices]})
        return 0
    if not devices:
        print("no audio devices found (is PulseAudio/PipeWire running, or ALSA configured?)")
        return 0
    for d in devices:
        mark = ("<" if d.is_default_input else " ") + (">" if d.is_default_output else " ")
        print(f"{mark} {d.index:3d}  {d.name}  (in {d.max_input_channels}, "
              f"out {d.max_output_channels}, {d.default_samplerate:.0f} Hz, {d.hostapi})")
    print("\n< default input, > default output; pick one with `audio.input_device` or --device")
    return 0


def cmd_config_check(args) -> int:
    from edgevoice.config import load_config

    path = args.path or args.config
    _, source = load_config(path)
    print(f"{source}: OK" if source else "no config file: built-in defaults are used (OK)")
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
