"""`edgevoice ctl ...`: drive a running daemon over the control API.

Exit codes: 0 done, 2 the daemon said no or is not running (one sentence on stderr), 130 Ctrl+C.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgevoice.control.protocol import POLICIES

# ctl verb -> (protocol command, argument name or None, help)
_VERBS = {
    "status": ("status", None, "show the agent's state (--json for the full record)"),
    "events": ("subscribe", None, "follow the event stream: one JSON object per line"),
    "mute": ("mute", None, "stop answering (the spoken 'unmute' still works)"),
    "unmute": ("unmute", None, "answer again"),
    "ptt-start": ("ptt_start", None, "push-to-talk pressed (activation.mode push_to_talk)"),
    "ptt-stop": ("ptt_stop", None, "push-to-talk released: the utterance ends now"),
    "cancel": ("cancel", None, "stop the current reply"),
    "say": ("say", "text", "speak TEXT (no language model)"),
    "ask": ("ask", "text", "ask TEXT as if it had been heard; prints the reply"),
    "policy": ("set_policy", "policy", "set the language model policy"),
    "reload": ("reload", None, "re-read the config file (live: agent.*, activation.*)"),
    "quit": ("quit", None, "stop the daemon"),
}


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ctl", parents=[common], help="control a running agent (status, mute, "
                       "push-to-talk, say, ask, events, ...)")
    p.add_argument("--socket", metavar="PATH",
                   help="control socket (default: control.socket, else the standard path)")
    verbs = p.add_subparsers(dest="ctl_verb", metavar="VERB", required=True)
    for verb, (_, arg, help_text) in _VERBS.items():
        v = verbs.add_parser(verb, parents=[common], help=help_text)
        if arg == "text":
            v.add_argument("text")
        elif arg == "policy":
            v.add_argument("policy", choices=POLICIES)
        if verb not in ("events",):
            v.add_argument("--json", action="store_true", help="print the result as JSON")
        v.set_defaults(func=cmd_ctl)


def _path(args):
    from edgevoice.config import load_config
    from edgevoice.control.protocol import socket_path

    if getattr(args, "socket", None):
        return socket_path(args.socket)
    cfg, _ = load_config(args.config)
    return socket_path(cfg.control.socket)


def cmd_ctl(args) -> int:
    from edgevoice.control.client import ControlClient

    cmd, arg, _ = _VERBS[args.ctl_verb]
    with ControlClient(_path(args)) as client:
        if args.ctl_verb == "events":
            for event in client.events():
                print(json.dumps(event, ensure_ascii=False), flush=True)
            return 0
        kwargs = {arg: getattr(args, arg)} if arg else {}
        result = client.request(cmd, timeout=300.0 if cmd in ("say", "ask") else None, **kwargs)
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    elif args.ctl_verb == "status":
        _print_status(result)
    elif cmd in ("say", "ask"):
        _print_turn(result)
    elif cmd == "reload":
        print(f"reloaded {result.get('source') or 'built-in defaults'}; applied: "
              f"{', '.join(result['applied']) or 'nothing changed'}"
              + (f"; restart needed for: {', '.join(result['needs_restart'])}"
                 if result["needs_restart"] else ""), flush=True)
    else:
        print(_done(cmd, result), flush=True)
    return 0


def _done(cmd: str, result: dict) -> str:
    """What a command without output of its own did, in one sentence."""
    if cmd in ("mute", "unmute"):
        return ('Muted: only the spoken "unmute" is answered.' if result.get("muted")
                else "Unmuted: answering again.")
    if cmd in ("ptt_start", "ptt_stop"):
        return ("Push-to-talk pressed: speak now, then `edgevoice ctl ptt-stop`."
                if result.get("pressed") else "Push-to-talk released: the utterance ends now.")
    if cmd == "cancel":
        return "Cancelled the current reply." if result.get("cancelled") else \
            "Nothing to cancel: no reply was playing."
    if cmd == "set_policy":
        return f"Language model policy is now {result.get('policy')}."
    if cmd == "quit":
        return "The daemon is stopping."
    return "Done."


def _print_status(s: dict) -> None:
    act = s["activation"]
    last = s.get("last_turn")
    lines = [
        f"state:       {s['state']}" + (" (muted)" if s["muted"] and s["state"] != "muted"
                                        else ""),
        f"activation:  {act['mode']}" + ("" if act["mode"] == "always" else
                                         f" ({'open' if act['active'] else 'closed'})"),
        *(f"devices:     {why}" for why in (s.get("lost_devices") or {}).values()),
        f"llm policy:  {s['policy']}",
        "targets:     " + (", ".join(f"{t['name']} ({t['model']}, {t['device']})"
                                     for t in s["targets"]) or "none (built-in intents only)"),
    ]
    if last:
        first = last["latency_ms"].get("first_audio")
        lines.append(f"last turn:   {last['target'] or 'none'}" +
                     (f", first audio after {first:.0f} ms" if first is not None else "") +
                     (" (interrupted)" if last["interrupted"] else ""))
    lines.append(f"daemon:      pid {s['pid']}, edgevoice {s['version']}, {s['socket']}")
    print("\n".join(lines), flush=True)


def _print_turn(event: dict) -> None:
    if event.get("event") == "ignored":
        print(f"(not answered: {event['reason']})", file=sys.stderr, flush=True)
        return
    said = event.get("spoken", event["reply"]) if event.get("interrupted") else event["reply"]
    print(said.strip() + (" (interrupted)" if event.get("interrupted") else ""), flush=True)
