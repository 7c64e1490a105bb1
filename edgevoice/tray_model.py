"""What the tray shows, as plain data: the daemon's status folded with its events into a model,
the model mapped to an icon spec and a menu. No pystray, no Pillow, no sockets: unit-testable."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

POLICIES = ("local", "auto", "remote")


@dataclass(frozen=True)
class TrayModel:
    """The daemon as the tray last saw it. ``connected`` False: no daemon (grey icon)."""

    connected: bool = False
    state: str = "listening"  # listening | thinking | speaking | muted | no-microphone | no-speaker
    muted: bool = False
    policy: str = "local"
    activation_mode: str = "always"
    activation_active: bool = True
    ptt_pressed: bool = False
    last_target: str = ""
    last_latency_ms: dict[str, float] = field(default_factory=dict)
    target_kinds: dict[str, str] = field(default_factory=dict)  # target name -> local | openai

    @property
    def offload(self) -> bool:
        """Replies go off the device: policy remote, or the last turn ran on a non-local target
        (intents and unknown names count as local)."""
        kind = self.target_kinds.get(self.last_target, "local")
        return self.policy == "remote" or kind != "local"


def from_status(status: dict) -> TrayModel:
    """A model from the ``status`` command's result."""
    activation = status.get("activation") or {}
    last = status.get("last_turn") or {}
    return TrayModel(
        connected=True,
        state=status.get("state", "listening"),
        muted=bool(status.get("muted")),
        policy=status.get("policy", "local"),
        activation_mode=activation.get("mode", "always"),
        activation_active=bool(activation.get("active", True)),
        last_target=last.get("target") or "",
        last_latency_ms=dict(last.get("latency_ms") or {}),
        target_kinds={t["name"]: t.get("kind", "local") for t in status.get("targets") or []},
    )


def apply_event(model: TrayModel, event: dict) -> TrayModel:
    """Fold one control-API event into the model; kinds the tray does not show change nothing."""
    kind = event.get("event")
    if kind == "state":
        return replace(model, state=event.get("state", model.state))
    if kind == "muted":
        return replace(model, muted=bool(event.get("muted")))
    if kind == "policy":
        return replace(model, policy=event.get("policy", model.policy))
    if kind == "activation":
        return replace(model, activation_mode=event.get("mode", model.activation_mode),
                       activation_active=bool(event.get("active")))
    if kind == "turn":
        return replace(model, last_target=event.get("target") or "",
                       last_latency_ms=dict(event.get("latency_ms") or {}))
    return model


# -- icon ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IconSpec:
    """How to draw the icon: a filled disc of ``colour`` with a white ``glyph``; ``badge``
    adds a small offload dot in a corner."""

    kind: str
    colour: tuple[int, int, int]
    glyph: str  # mic | dots | wave | mic_off | cloud | cross | pause | alert
    badge: bool = False


ICONS: dict[str, IconSpec] = {
    "idle": IconSpec("idle", (96, 125, 139), "pause"),          # blue-grey
    "listening": IconSpec("listening", (46, 160, 67), "mic"),   # green
    "thinking": IconSpec("thinking", (245, 166, 35), "dots"),   # amber
    "speaking": IconSpec("speaking", (33, 110, 230), "wave"),   # blue
    "muted": IconSpec("muted", (211, 47, 47), "mic_off"),       # red
    "offload": IconSpec("offload", (142, 68, 173), "cloud"),    # purple
    "offline": IconSpec("offline", (120, 120, 120), "cross"),   # grey
    "no_device": IconSpec("no_device", (230, 74, 25), "alert"),  # deep orange
}
DEVICE_STATES = {"no-microphone": "no microphone", "no-speaker": "no speaker"}
BADGE_COLOUR = ICONS["offload"].colour


def icon_kind(model: TrayModel) -> str:
    """One of ``ICONS``: offline, no_device (a lost microphone or speaker), muted, speaking,
    thinking, then offload, idle, listening."""
    if not model.connected:
        return "offline"
    if model.state in DEVICE_STATES:
        return "no_device"
    if model.muted or model.state == "muted":
        return "muted"
    if model.state in ("thinking", "speaking"):
        return model.state
    if model.offload:
        return "offload"
    if not model.activation_active:
        return "idle"  # push-to-talk not pressed, wake word not heard yet
    return "listening"


def icon_spec(model: TrayModel) -> IconSpec:
    kind = icon_kind(model)
    spec = ICONS[kind]
    # While a reply is worked on elsewhere, keep the offload hint as a badge.
    if kind in ("thinking", "speaking") and model.offload:
        spec = replace(spec, badge=True)
    return spec


def tooltip(model: TrayModel) -> str:
    kind = icon_kind(model)
    if kind == "offline":
        return "edgevoice: no agent running"
    if kind == "no_device":
        return f"edgevoice: {DEVICE_STATES[model.state]} (waiting for it to come back)"
    where = " (offload)" if model.offload and kind != "offload" else ""
    return f"edgevoice: {kind}{where}, policy {model.policy}"


# -- menu ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MenuEntry:
    """One menu row. ``action`` is what ``TrayApp.perform`` runs; None: a label or separator.
    ``checked`` None: not a check item; ``radio``: shown as a radio button."""

    text: str
    action: Optional[str] = None
    checked: Optional[bool] = None
    radio: bool = False
    enabled: bool = True

    @property
    def separator(self) -> bool:
        return self.text == "-"


SEPARATOR = MenuEntry("-", enabled=False)


def latency_text(model: TrayModel) -> str:
    """"Last turn: 640 ms (local)": speech end to the first reply audio, else the latest stage
    recorded (a turn cut before it spoke)."""
    lat = model.last_latency_ms
    if not lat:
        return "Last turn: none yet"
    value = lat.get("first_audio", max(lat.values()))
    where = f" ({model.last_target})" if model.last_target else ""
    return f"Last turn: {value:.0f} ms{where}"


def menu_model(model: TrayModel, *, owns_daemon: bool = False) -> list[MenuEntry]:
    """The menu for this model. Push-to-talk is enabled only in ``push_to_talk`` mode."""
    up = model.connected
    ptt_mode = model.activation_mode == "push_to_talk"
    entries = [
        MenuEntry("Muted", "toggle_mute", checked=model.muted, enabled=up),
        MenuEntry("Push to talk", "toggle_ptt", checked=model.ptt_pressed,
                  enabled=up and ptt_mode),
        SEPARATOR,
    ]
    entries += [MenuEntry(f"LLM: {p}", f"policy:{p}", checked=model.policy == p, radio=True,
                          enabled=up) for p in POLICIES]
    entries += [
        SEPARATOR,
        MenuEntry(latency_text(model), enabled=False),
        MenuEntry("Open config", "open_config"),
        SEPARATOR,
        MenuEntry("Stop the agent", "stop_daemon") if up
        else MenuEntry("Start the agent", "start_daemon"),
        MenuEntry("Quit" + (" (stops the agent)" if owns_daemon else ""), "quit"),
    ]
    return entries
