"""`edgevoice wyoming --uri tcp://HOST:PORT`: serve Home Assistant over the Wyoming protocol."""

from __future__ import annotations

import argparse
import sys


def register(sub, common: argparse.ArgumentParser) -> None:
    from edgevoice.cli import _remote_options

    p = sub.add_parser("wyoming", parents=[common],
                       help="serve speech recognition, speech and the agent to Home Assistant "
                       "(Wyoming protocol)")
    p.add_argument("--uri", metavar="tcp://HOST:PORT",
                   help="where to listen (overrides wyoming.uri; default tcp://127.0.0.1:10700)")
    p.add_argument("--advertise", action="store_true", default=None,
                   help="announce the service with zeroconf (overrides wyoming.advertise)")
    p.add_argument("--llm-model", metavar="PATH", help="GGUF model file (overrides llm.model)")
    _remote_options(p)
    p.set_defaults(func=cmd_wyoming)


def require_wyoming() -> None:
    """The protocol library is a dependency; a broken install gets one sentence, not a trace."""
    try:
        import wyoming  # noqa: F401
    except ImportError:
        from edgevoice.errors import UserError

        raise UserError("serving Wyoming needs the wyoming package: `pip install wyoming` (or "
                        "reinstall edgevoice, which depends on it)") from None


def beside_agent(cfg, paths, router, synth, manager):
    """`edgevoice run` with `wyoming.enabled` (see ``edgevoice.wyoming.serve.beside_agent``)."""
    require_wyoming()
    from edgevoice.wyoming.serve import beside_agent as serve_beside

    return serve_beside(cfg, paths, router, synth, manager)


def cmd_wyoming(args) -> int:
    import asyncio
    import dataclasses
    import signal

    from edgevoice.agent.assemble import make_router, prepare_targets
    from edgevoice.cli import _load
    from edgevoice.tts.pyttsx3_backend import Pyttsx3Synthesizer
    from edgevoice.wyoming.serve import serve
    from edgevoice.wyoming.server import parse_uri

    require_wyoming()
    cfg, paths = _load(args)
    if args.advertise:
        cfg = dataclasses.replace(cfg, wyoming=dataclasses.replace(cfg.wyoming, advertise=True))
    uri = args.uri or cfg.wyoming.uri
    parse_uri(uri)  # a bad URI fails before any model loads
    router = make_router(cfg, paths, args.llm_model, remote_url=args.remote,
                         remote_model=args.remote_model, policy=args.policy)
    synth = None
    try:
        prepare_targets(router, paths)
        synth = Pyttsx3Synthesizer(cfg.tts)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            def ready(server) -> None:
                host, port = server.address
                print(f"Wyoming on tcp://{host}:{port} — add it in Home Assistant (Settings > "
                      "Devices & services > Add integration > Wyoming Protocol); Ctrl+C to stop",
                      file=sys.stderr, flush=True)

            await serve(cfg, paths, router, synth, uri, stop, ready)

        asyncio.run(main())
    finally:
        if synth is not None:
            synth.close()
        router.close()
    return 0
