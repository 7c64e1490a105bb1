"""An X11 system-tray icon with a pop-up menu: XEMBED + the System Tray Protocol on python-xlib.

Used where pystray would fall back to its xorg backend (an X session without PyGObject), because
that backend loses the icon: it sends its dock request once (a tray host that drops it, starts
after the tray app or restarts leaves the icon invisible for good; trayer drops about one in
five), it drives one X connection from several threads (python-xlib then deadlocks, seen about
one run in ten), and it has no menu, only a left click. Here one thread owns the connection;
other threads hand it work through a lock and a wake-up pipe. The dock request is repeated until
the icon is embedded, and again when a tray host (re)appears. Left click runs the default action,
right click opens the menu (Escape or a click elsewhere closes it); a click on an entry runs it
on a short-lived thread.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional

from edgevoice.tray_model import MenuEntry

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SYSTEM_TRAY_REQUEST_DOCK = 0
XEMBED_MAPPED = 1
RETRY_S = 1.0  # how often an icon that is not embedded asks again

MENU_FONTS = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf",
              "FreeSans.ttf")
ROW_H, SEPARATOR_H, PAD_X, MARK_W, FONT_PX = 24, 9, 10, 20, 13
MENU_BG, MENU_FG, MENU_DIM = (246, 246, 246), (25, 25, 25), (150, 150, 150)
MENU_HI_BG, MENU_HI_FG, MENU_LINE = (52, 101, 164), (255, 255, 255), (200, 200, 200)


@lru_cache(maxsize=1)
def _menu_font() -> Any:
    """The desktop's sans font where installed (DejaVu, Liberation: they cover the menu's text
    and a user's names), else Pillow's built-in one; decoded once, not on every hover."""
    from PIL import ImageFont

    for name in MENU_FONTS:
        try:
            return ImageFont.truetype(name, FONT_PX)
        except OSError:
            continue
    return ImageFont.load_default(FONT_PX)


@dataclass(frozen=True)
class MenuRow:
    """One menu line and where it is on the screen (root coordinates)."""

    entry: MenuEntry
    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2


class X11TrayIcon:
    """A tray icon owned by the thread that calls ``run``; ``update`` and ``stop`` from any."""

    def __init__(self, image: Image.Image, title: str, *,
                 entries: Callable[[], Sequence[MenuEntry]],
                 on_action: Callable[[str], Any],
                 default_action: Callable[[], Optional[str]],
                 display_name: Optional[str] = None) -> None:
        self.entries = entries
        self.on_action = on_action
        self.default_action = default_action
        self.display_name = display_name
        self.docked = threading.Event()       # embedded by a tray host right now
        self.dock_requests = 0                # dock requests sent (first one included)
        self.menu_rows: list[MenuRow] = []    # the open menu's rows; empty when closed
        self._image, self._title = image, title
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._closed = False

    # -- any thread ----------------------------------------------------------------------------

    def update(self, image: Optional[Image.Image] = None, title: Optional[str] = None) -> None:
        """Show a new image and/or title (and refresh an open menu)."""
        with self._lock:
            if image is not None:
                self._pending["image"] = image
            if title is not None:
                self._pending["title"] = title
            self._pending["menu"] = True
        self._wake()

    def stop(self) -> None:
        """End ``run``; idempotent."""
        with self._lock:
            self._stopping = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # closed: the loop has ended
            pass

    # -- the owning thread ---------------------------------------------------------------------

    def run(self) -> None:
        """Create the icon, dock it, and handle X events until ``stop`` (or the display goes)."""
        from Xlib import error
        from Xlib.display import Display

        d = self._d = Display(self.display_name)
        d.set_error_handler(lambda err, *_: log.debug("X error (ignored): %s", err))
        try:
            self._setup()
            while True:
                with self._lock:
                    pending, self._pending = self._pending, {}
                    if self._stopping:
                        break
                self._apply(pending)
                while d.pending_events():
                    self._handle(d.next_event())
                self._keep_docked()
                # sync(): every request sent (a flush may send only part of a menu image), and
                # events that arrived meanwhile are in python-xlib's queue, not on the socket,
                # so look there before select() waits on the socket.
                d.sync()
                if d.pending_events():
                    continue
                timeout = None if self.docked.is_set() else RETRY_S / 4
                ready, _, _ = select.select([d.fileno(), self._wake_r], [], [], timeout)
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
        except error.ConnectionClosedError as exc:  # the session ended under us
            log.info("the X display closed: %s", exc)
        finally:
            self._close()

    def _setup(self) -> None:
        from Xlib import X, Xutil

        d = self._d
        screen = d.screen()
        self._root = screen.root
        self._selection = d.intern_atom(f"_NET_SYSTEM_TRAY_S{d.get_default_screen()}")
        self._opcode = d.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
        self._manager_atom = d.intern_atom("MANAGER")
        xembed_info = d.intern_atom("_XEMBED_INFO")
        self._has_shape = d.has_extension("SHAPE")
        # A tray host announces itself with a MANAGER message to the root window.
        self._root.change_attributes(event_mask=X.StructureNotifyMask)
        self._window = self._root.create_window(
            0, 0, 24, 24, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
            background_pixel=screen.black_pixel,
            event_mask=(X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask))
        self._window.set_wm_name(self._title)
        self._window.set_wm_class("edgevoice", "edgevoice")
        self._window.set_wm_normal_hints(flags=Xutil.PSize | Xutil.PMinSize, width=24,
                                         height=24, min_width=24, min_height=24)
        self._window.change_property(xembed_info, xembed_info, 32, [0, XEMBED_MAPPED])
        self._gc = self._window.create_gc()
        self._size = (24, 24)
        self._manager: Any = None
        self._next_request = 0.0
        self._menu: Any = None
        self._menu_gc: Any = None
        self._menu_size = (0, 0)
        self._menu_hover = -1
        self._request_dock()

    def _close(self) -> None:
        with self._lock:
            self._stopping = True
        try:
            self._close_menu()
            self._window.destroy()
            self._d.close()
        except Exception as exc:  # the server may be gone already
            log.debug("closing the tray icon: %s", exc)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self.docked.clear()

    def _apply(self, pending: dict[str, Any]) -> None:
        if "title" in pending:
            self._title = pending["title"]
            self._window.set_wm_name(self._title)
        if "image" in pending:
            self._image = pending["image"]
            self._draw()
        if pending.get("menu") and self._menu is not None:
            self._draw_menu()

    # -- docking -------------------------------------------------------------------------------

    def _request_dock(self) -> None:
        from Xlib import X
        from Xlib.protocol.event import ClientMessage

        self._next_request = time.monotonic() + RETRY_S
        owner = self._d.get_selection_owner(self._selection)
        if owner == X.NONE:
            self._manager = None
            return
        self._manager = owner
        owner.change_attributes(event_mask=X.StructureNotifyMask)  # to see it go away
        owner.send_event(ClientMessage(window=owner, client_type=self._opcode, data=(
            32, (X.CurrentTime, SYSTEM_TRAY_REQUEST_DOCK, self._window.id, 0, 0))),
            event_mask=X.NoEventMask)
        self.dock_requests += 1
        log.debug("dock request %d to tray host 0x%x", self.dock_requests, owner.id)

    def _keep_docked(self) -> None:
        if not self.docked.is_set() and time.monotonic() >= self._next_request:
            self._request_dock()

    # -- events --------------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        from Xlib import XK, X

        window = getattr(event, "window", None)
        wid = window.id if window is not None else None
        if event.type == X.ClientMessage and wid == self._root.id:
            if event.client_type == self._manager_atom and \
                    event.data[1][1] == self._selection and not self.docked.is_set():
                log.debug("a tray host appeared")
                self._request_dock()
        elif event.type == X.ReparentNotify and wid == self._window.id:
            if event.parent.id != self._root.id:
                self.docked.set()
            else:  # the host died: X put us back on the root window, mapped; hide until docked
                self.docked.clear()
                self._window.unmap()
                self._close_menu()
                self._next_request = time.monotonic() + RETRY_S
        elif event.type == X.DestroyNotify and self._manager is not None and \
                wid == self._manager.id:
            log.debug("the tray host went away")
            self._manager = None
            self.docked.clear()
            self._next_request = time.monotonic() + RETRY_S
        elif event.type == X.ConfigureNotify and wid == self._window.id:
            if (event.width, event.height) != self._size:
                self._size = (event.width, event.height)
                self._draw()
        elif event.type == X.Expose and event.count == 0:
            if wid == self._window.id:
                self._draw()
            elif self._menu is not None and wid == self._menu.id:
                self._draw_menu()
        elif event.type == X.ButtonPress:
            self._on_press(event, wid)
        elif event.type == X.KeyPress and self._menu is not None:
            if event.detail == self._d.keysym_to_keycode(XK.XK_Escape):
                self._close_menu()
        elif event.type == X.MotionNotify and self._menu is not None:
            hover = self._row_at(event.root_x, event.root_y)
            if hover != self._menu_hover:
                self._menu_hover = hover
                self._draw_menu()

    def _on_press(self, event: Any, wid: Optional[int]) -> None:
        if self._menu is not None:
            row = self._row_at(event.root_x, event.root_y)
            action = self.menu_rows[row].entry.action if row >= 0 else None
            self._close_menu()
            self._run_action(action)
            return
        if wid != self._window.id:
            return
        default = self.default_action()
        if event.detail == 1 and default:
            self._run_action(default)
        elif event.detail in (1, 3):
            self._open_menu()

    def _run_action(self, action: Optional[str]) -> None:
        if action:
            threading.Thread(target=self.on_action, args=(action,), name=f"tray-{action}",
                             daemon=True).start()

    # -- drawing -------------------------------------------------------------------------------

    def _draw(self) -> None:
        from PIL import Image

        w, h = self._size
        side = max(1, min(w, h))
        icon = self._image.convert("RGBA").resize((side, side), Image.LANCZOS)
        frame = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        frame.paste(icon, ((w - side) // 2, (h - side) // 2))
        alpha = frame.getchannel("A")
        if self._has_shape:
            self._shape(alpha.point(lambda a: 255 if a >= 128 else 0).convert("1"))
        background = Image.new("RGB", (w, h), (0, 0, 0))
        background.paste(frame, (0, 0), alpha)
        self._window.put_pil_image(self._gc, 0, 0, background)

    def _shape(self, mask: Image.Image) -> None:
        """Cut the window to the icon's opaque pixels: round on any panel colour."""
        from Xlib.ext import shape

        w, h = mask.size
        pixmap = self._window.create_pixmap(w, h, 1)
        gc = pixmap.create_gc(foreground=1, background=0)
        pixmap.put_pil_image(gc, 0, 0, mask)
        self._window.shape_mask(shape.SO.Set, shape.SK.Bounding, 0, 0, pixmap)
        gc.free()
        pixmap.free()

    # -- menu ----------------------------------------------------------------------------------

    def _layout(self, entries: Sequence[MenuEntry]) -> tuple[int, list[tuple[int, int]]]:
        """Menu width and each row's (y, height)."""
        font = _menu_font()
        width = max((int(font.getlength(e.text)) for e in entries if not e.separator),
                    default=60)
        rows, y = [], 4
        for e in entries:
            height = SEPARATOR_H if e.separator else ROW_H
            rows.append((y, height))
            y += height
        return PAD_X + MARK_W + width + 2 * PAD_X, rows

    def _open_menu(self) -> None:
        from Xlib import X

        screen = self._d.screen()
        self._menu = self._root.create_window(
            0, 0, 1, 1, 1, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
            background_pixel=screen.white_pixel, border_pixel=screen.black_pixel,
            override_redirect=True,
            event_mask=(X.ExposureMask | X.ButtonPressMask | X.PointerMotionMask
                        | X.KeyPressMask))
        self._menu_gc = self._menu.create_gc()
        self._menu_hover = -1
        self._place_menu(list(self.entries()))
        self._menu.map()
        self._menu.raise_window()
        self._menu.grab_pointer(True, X.ButtonPressMask | X.PointerMotionMask,
                                X.GrabModeAsync, X.GrabModeAsync, X.NONE, X.NONE,
                                X.CurrentTime)
        self._menu.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync, X.CurrentTime)

    def _place_menu(self, entries: list[MenuEntry]) -> None:
        """Size and place the menu under the icon (above it at the bottom of the screen)."""
        width, rows = self._layout(entries)
        height = rows[-1][0] + rows[-1][1] + 4 if rows else 8
        origin = self._window.translate_coords(self._root, 0, 0)  # the root, seen from us
        screen = self._d.screen()
        x0, y0 = -origin.x, -origin.y
        x = max(0, min(x0, screen.width_in_pixels - width - 2))
        below = y0 + self._size[1]
        y = below if below + height + 2 <= screen.height_in_pixels else max(0, y0 - height - 2)
        self._menu.configure(x=x, y=y, width=width, height=height)
        self._menu_size = (width, height)
        self.menu_rows = [MenuRow(e, x + 1, y + 1 + ry, width, rh)  # +1: the border
                          for e, (ry, rh) in zip(entries, rows, strict=True)]

    def _close_menu(self) -> None:
        from Xlib import X

        if self._menu is None:
            return
        self.menu_rows = []
        self._d.ungrab_pointer(X.CurrentTime)
        self._d.ungrab_keyboard(X.CurrentTime)
        self._menu_gc.free()
        self._menu.destroy()
        self._menu = None

    def _row_at(self, x: int, y: int) -> int:
        """Index of the enabled, actionable row under root point (x, y), else -1."""
        for i, row in enumerate(self.menu_rows):
            e = row.entry
            if (row.x <= x < row.x + row.width and row.y <= y < row.y + row.height
                    and not e.separator and e.enabled and e.action):
                return i
        return -1

    def _draw_menu(self) -> None:
        """Paint the menu from the current entries (the state may have changed while open)."""
        from PIL import Image, ImageDraw

        entries = list(self.entries())
        if [(e.text, e.separator) for e in entries] != \
                [(r.entry.text, r.entry.separator) for r in self.menu_rows]:
            self._place_menu(entries)
        else:
            self.menu_rows = [MenuRow(e, r.x, r.y, r.width, r.height)
                              for e, r in zip(entries, self.menu_rows, strict=True)]
        font = _menu_font()
        width, height = self._menu_size
        top = self.menu_rows[0].y if self.menu_rows else 0
        img = Image.new("RGB", (width, height), MENU_BG)
        draw = ImageDraw.Draw(img)
        for i, row in enumerate(self.menu_rows):
            e, y, h = row.entry, row.y - top + 4, row.height
            if e.separator:
                draw.line((4, y + h // 2, width - 5, y + h // 2), fill=MENU_LINE)
                continue
            fg = MENU_FG if e.enabled else MENU_DIM
            if i == self._menu_hover:
                draw.rectangle((0, y, width - 1, y + h - 1), fill=MENU_HI_BG)
                fg = MENU_HI_FG
            cx, cy = PAD_X + 5, y + h // 2
            if e.checked and e.radio:
                draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), fill=fg)
            elif e.checked:
                draw.line((cx - 5, cy, cx - 1, cy + 4, cx + 6, cy - 5), fill=fg, width=2)
            elif e.radio:
                draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), outline=fg)
            draw.text((PAD_X + MARK_W, cy), e.text, fill=fg, font=font, anchor="lm")
        self._menu.put_pil_image(self._menu_gc, 0, 0, img)
