"""What the monitor would show: the current mode, the text on a text screen, and a picture.

The geometry comes from the CRT controller as the IBM VGA Technical Reference defines it:
horizontal display end (CR01) in character clocks, vertical display end (CR12 with overflow bits
in CR07), maximum scan line and double scanning (CR09), offset (CR13), start address (CR0C/CR0D),
byte/word/doubleword addressing (CR17 bit 6, CR14 bit 6) and the CGA-compatible substitution of
row-scan bits for address bits 13 and 14 (CR17 bits 0 and 1). Pictures are rendered at the
mode's logical resolution (mode 13h is 320x200, not the 640x400 the monitor scans); lines a mode
repeats through its maximum-scan-line setting are shown once.

Colours go through the attribute controller's palette (a 4-bit colour to a 6-bit value, with
colour plane enable and colour select) and the DAC, except 256-colour and VBE 8-bit pixels,
which index the DAC directly. Not rendered: the overscan border, horizontal pixel panning,
preset row scan, the split screen (line compare), blinking (blinking text shows in its visible
phase) and the hardware cursor's blink.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from .registers import VgaRegisters
from .vbe import BochsDispi

# Code page 437 as the VGA's ROM font draws it: 0x01-0x1F and 0x7F are pictures, not controls.
_CP437_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
CP437 = (tuple(_CP437_LOW) + tuple(chr(c) for c in range(0x20, 0x7F)) + ("⌂",)
         + tuple(bytes(range(0x80, 0xFF)).decode("cp437")) + (" ",))

# A glyph line as 8 pixels of 0/1, leftmost first (bit 7 is the leftmost dot).
_BITS8 = tuple(bytes((b >> (7 - i)) & 1 for i in range(8)) for b in range(256))
# 9-dot text: the ninth column is background, except that the line-drawing characters
# 0xC0-0xDF repeat the eighth when line graphics are enabled (attribute mode control bit 2).
_BITS9 = tuple(bits + b"\x00" for bits in _BITS8)
_BITS9_LINE = tuple(bits + bits[7:8] for bits in _BITS8)
# CGA 4-colour: a byte is four 2-bit pixels, leftmost in bits 7-6.
_CGA4 = tuple(bytes((b >> (6 - 2 * i)) & 3 for i in range(4)) for b in range(256))
# Font map select (sequencer register 3) to the font's offset in plane 2.
_FONT_BASE = tuple((sel & 3) * 0x4000 + (sel >> 2) * 0x2000 for sel in range(8))


@dataclass(frozen=True)
class _Snapshot:
    """The registers a frame depends on, copied under the card's lock."""

    seq: bytes
    gc: bytes
    crtc: bytes
    attr: bytes
    blanked: bool
    palette: bytes                  # 768 bytes of 8-bit RGB
    attr_lut: bytes                 # 4-bit colour -> DAC index
    pel_mask: int
    dispi: tuple | None             # (xres, yres, bpp, line_offset, start) while enabled
    vram_size: int


@dataclass(frozen=True)
class Geometry:
    """The mode the registers describe."""

    kind: str                       # "text", "vga" or "vbe"
    width: int                      # pixels
    height: int
    depth: int = 0                  # bits per pixel (graphics)
    cols: int = 0                   # characters (text)
    rows: int = 0
    char_width: int = 0
    char_height: int = 0


@dataclass(frozen=True)
class TextCells:
    """A text mode screen cell by cell, as the CRT controller fetches it: per row the character
    codes (code page 437) and the attribute bytes, and where the hardware cursor shows."""

    cols: int
    rows: int
    chars: tuple[bytes, ...]        # one per row, ``cols`` long
    attrs: tuple[bytes, ...]
    # 8-bit RGB of the 16 attribute colours, through the attribute palette and the DAC.
    colours: tuple[tuple[int, int, int], ...]
    # Attribute bit 7 blinks the character (attribute mode control bit 3) rather than
    # selecting the bright half of the background colours.
    blink: bool
    cursor: tuple[int, int] | None  # (row, column); None while disabled or off the screen


class Screen:
    """The display as a user sees it: ``mode()``, ``text()``, ``cells()``, ``image()`` and ``png()``."""

    def __init__(self, regs: VgaRegisters, vram, dispi: BochsDispi):
        self.regs = regs
        self.vram = memoryview(vram)
        self.dispi = dispi
        self._layout: tuple | None = None       # (registers, rows) of the last text layout

    # -- public ----------------------------------------------------------------------------------
    def mode(self) -> str:
        """A short description: "text 80x25", "vga 320x200x8", "vbe 1024x768x32"."""
        g = self.geometry()
        if g.kind == "text":
            return f"text {g.cols}x{g.rows}"
        return f"{g.kind} {g.width}x{g.height}x{g.depth}"

    def geometry(self) -> Geometry:
        """The current mode's kind and size."""
        return self._geometry(self._snapshot())

    def text(self) -> str:
        """The characters of a text mode screen, one line per row, trailing blanks removed;
        empty in graphics modes."""
        snap = self._snapshot()
        g = self._geometry(snap)
        if g.kind != "text":
            return ""
        vram = self.vram
        lines = []
        for r in range(g.rows):
            cells = self._row_cells(snap, g, r)
            lines.append("".join(CP437[vram[4 * mem]] for mem in cells).rstrip())
        return "\n".join(lines)

    def cells(self) -> TextCells | None:
        """A text mode screen's characters, attributes and cursor; None in graphics modes."""
        snap = self._snapshot()
        g = self._geometry(snap)
        if g.kind != "text":
            return None
        vram, crtc = self.vram, snap.crtc
        chars, attrs = [], []
        for row in self._text_layout(snap, g):
            if isinstance(row, range):
                chars.append(bytes(vram[4 * row.start:4 * row.stop:4 * row.step]))
                attrs.append(bytes(vram[4 * row.start + 1:4 * row.stop:4 * row.step]))
            else:
                chars.append(bytes(vram[4 * m] for m in row))
                attrs.append(bytes(vram[4 * m + 1] for m in row))
        palette = snap.palette
        colours = tuple(tuple(palette[3 * i:3 * i + 3]) for i in snap.attr_lut)
        # The cursor location register (CR0E/CR0F) counts in the same units as the start
        # address; cursor start bit 5 (CR0A) turns it off, as does a start line past the end.
        cursor = None
        stride = crtc[0x13] * 2
        start = crtc[0x0C] << 8 | crtc[0x0D]
        if not crtc[0x0A] & 0x20 and crtc[0x0A] & 0x1F <= crtc[0x0B] & 0x1F and stride:
            row, col = divmod(((crtc[0x0E] << 8 | crtc[0x0F]) - start) & 0xFFFF, stride)
            if row < g.rows and col < g.cols:
                cursor = (row, col)
        return TextCells(g.cols, g.rows, tuple(chars), tuple(attrs), colours,
                         bool(snap.attr[0x10] & 0x08), cursor)

    def _text_layout(self, snap: _Snapshot, g: Geometry) -> list[range | list[int]]:
        """Per text row, the plane offsets of its cells: a range where they are evenly spaced
        (the usual case, read as two slices), else the list. Kept until the registers it
        follows from change: a display polling the screen asks for it many times a second."""
        crtc = snap.crtc
        key = (crtc[0x0C], crtc[0x0D], crtc[0x13], crtc[0x14] & 0x40, crtc[0x17] & 0x60, g.cols, g.rows)
        cached = self._layout
        if cached is not None and cached[0] == key:
            return cached[1]
        layout: list[range | list[int]] = []
        for r in range(g.rows):
            mems = self._row_cells(snap, g, r)
            step = mems[1] - mems[0] if g.cols > 1 else 1
            run = range(mems[0], mems[0] + step * g.cols, step) if step > 0 else None
            layout.append(run if run is not None and mems == list(run) else mems)
        self._layout = (key, layout)
        return layout

    def image(self):
        """The picture as a Pillow RGB image at the mode's logical resolution."""
        from PIL import Image

        snap = self._snapshot()
        g = self._geometry(snap)
        size = (max(g.width, 1), max(g.height, 1))
        if snap.blanked:
            return Image.new("RGB", size)
        if g.kind == "text":
            return self._indexed(snap, size, self._render_text(snap, g))
        if g.kind == "vbe":
            return self._render_vbe(snap, g, size)
        return self._render_vga(snap, g, size)

    def png(self) -> bytes:
        """The picture encoded as PNG."""
        out = io.BytesIO()
        self.image().save(out, format="PNG")
        return out.getvalue()

    # -- registers to geometry -------------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        regs, dispi = self.regs, self.dispi
        with regs.lock:
            dispi_state = None
            if dispi.enabled:
                dispi_state = (dispi.xres, dispi.yres, dispi.bpp, dispi.line_offset, dispi.start)
            return _Snapshot(
                seq=bytes(regs.seq), gc=bytes(regs.gc), crtc=bytes(regs.crtc), attr=bytes(regs.attr),
                blanked=regs.blanked, palette=regs.palette_rgb(),
                attr_lut=bytes(regs.attr_to_dac(c) for c in range(16)), pel_mask=regs.pel_mask,
                dispi=dispi_state, vram_size=dispi.vram_size)

    @staticmethod
    def _geometry(snap: _Snapshot) -> Geometry:
        if snap.dispi is not None:
            xres, yres, bpp, line_offset, _ = snap.dispi
            # A guest may ask for more lines than VRAM holds (the limits allow 16000x12000);
            # only the lines that exist are shown, which also bounds the picture's size.
            return Geometry("vbe", xres, max(1, min(yres, snap.vram_size // max(line_offset, 1))), bpp)
        crtc = snap.crtc
        chars = crtc[0x01] + 1
        lines = (crtc[0x12] | (crtc[0x07] & 0x02) << 7 | (crtc[0x07] & 0x40) << 3) + 1
        if crtc[0x09] & 0x80:
            lines //= 2
        scan = (crtc[0x09] & 0x1F) + 1
        if not snap.gc[6] & 0x01:
            char_width = 8 if snap.seq[1] & 0x01 else 9
            rows = max(lines // scan, 1)
            return Geometry("text", chars * char_width, rows * scan, 0, chars, rows, char_width, scan)
        if snap.gc[5] & 0x40:
            width, depth = chars * 4, 8
        else:
            width = chars * 8
            depth = 2 if snap.gc[5] & 0x20 else (1 if snap.attr[0x12] & 0x0F == 1 else 4)
        # Without row-scan substitution the extra scan lines of a row repeat its pixels.
        height = lines // scan if crtc[0x17] & 0x03 == 0x03 else lines
        return Geometry("vga", width, max(height, 1), depth)

    @staticmethod
    def _address(crtc: bytes, ma: int) -> int:
        """A CRTC memory address counter value to a plane offset."""
        if crtc[0x14] & 0x40:
            mem = ma << 2
        elif not crtc[0x17] & 0x40:
            # Word mode rotates MA15 (or MA13, for 16 KiB CGA wrap-around) into bit 0.
            mem = ma << 1 | ma >> (15 if crtc[0x17] & 0x20 else 13) & 1
        else:
            mem = ma
        return mem & 0xFFFF

    @staticmethod
    def _fetch_step(crtc: bytes) -> int:
        if crtc[0x14] & 0x40:
            return 4
        return 1 if crtc[0x17] & 0x40 else 2

    def _line_address(self, snap: _Snapshot, y: int, collapse: bool, raw: bool = False) -> int:
        """Plane offset (or, with ``raw``, the untransformed address) of logical line ``y``."""
        crtc = snap.crtc
        start = crtc[0x0C] << 8 | crtc[0x0D]
        scan = (crtc[0x09] & 0x1F) + 1
        row, rs = (y, 0) if collapse else divmod(y, scan)
        ma = (start + row * crtc[0x13] * 2) & 0xFFFF
        if raw:
            return ma
        mem = self._address(crtc, ma)
        if not crtc[0x17] & 0x01:
            mem = (mem & ~0x2000) | (rs & 1) << 13
        if not crtc[0x17] & 0x02:
            mem = (mem & ~0x4000) | (rs & 2) << 13
        return mem

    def _row_cells(self, snap: _Snapshot, g: Geometry, row: int) -> list[int]:
        """Plane offsets of the characters of text row ``row``."""
        crtc = snap.crtc
        start = crtc[0x0C] << 8 | crtc[0x0D]
        ma = start + row * crtc[0x13] * 2
        return [self._address(crtc, (ma + c) & 0xFFFF) for c in range(g.cols)]

    # -- rendering -------------------------------------------------------------------------------
    @staticmethod
    def _indexed(snap: _Snapshot, size, data: bytes):
        """DAC indices to an RGB image."""
        from PIL import Image

        im = Image.frombytes("P", size, bytes(data))
        im.putpalette(snap.palette)
        return im.convert("RGB")

    @staticmethod
    def _pel_masked(snap: _Snapshot, data):
        """Pixels that index the DAC directly still pass the PEL mask (port 0x3C6)."""
        mask = snap.pel_mask
        return data if mask == 0xFF else bytes(data).translate(bytes(i & mask for i in range(256)))

    def _render_text(self, snap: _Snapshot, g: Geometry) -> bytearray:
        vram, crtc, attr_lut = self.vram, snap.crtc, snap.attr_lut
        width, cw, ch_h = g.width, g.char_width, g.char_height
        out = bytearray(width * g.height)
        blink = bool(snap.attr[0x10] & 0x08)
        line_graphics = bool(snap.attr[0x10] & 0x04)
        sr3 = snap.seq[3]
        font_a = _FONT_BASE[(sr3 >> 2 & 3) | (sr3 >> 3 & 4)]
        font_b = _FONT_BASE[(sr3 & 3) | (sr3 >> 2 & 4)]
        underline = crtc[0x14] & 0x1F
        cursor = crtc[0x0E] << 8 | crtc[0x0F]
        cur_start, cur_end = crtc[0x0A] & 0x1F, crtc[0x0B] & 0x1F
        cursor_on = not crtc[0x0A] & 0x20 and cur_start <= cur_end
        start = crtc[0x0C] << 8 | crtc[0x0D]
        tables: dict[tuple[int, int], bytes] = {}
        for r in range(g.rows):
            ma_row = start + r * crtc[0x13] * 2
            for c in range(g.cols):
                ma = (ma_row + c) & 0xFFFF
                mem = self._address(crtc, ma)
                code, attr = vram[4 * mem], vram[4 * mem + 1]
                fg = attr_lut[attr & 0x0F]
                bg = attr_lut[(attr >> 4) & (0x07 if blink else 0x0F)]
                table = tables.get((fg, bg))
                if table is None:
                    table = tables[(fg, bg)] = bytes((bg, fg)) + bytes(254)
                font = font_a if attr & 0x08 else font_b
                glyph = 4 * (font + code * 32) + 2
                if cw == 8:
                    bits = _BITS8
                else:
                    bits = _BITS9_LINE if line_graphics and 0xC0 <= code <= 0xDF else _BITS9
                pos = r * ch_h * width + c * cw
                for line in range(ch_h):
                    if line == underline and attr & 0x77 == 0x01:
                        row = bytes((fg,)) * cw
                    else:
                        row = bits[vram[glyph + 4 * line]].translate(table)
                    out[pos:pos + cw] = row
                    pos += width
                if cursor_on and ma == cursor:
                    pos = r * ch_h * width + c * cw
                    for line in range(cur_start, min(cur_end, ch_h - 1) + 1):
                        at = pos + line * width
                        out[at:at + cw] = bytes((fg,)) * cw
        return out

    def _render_vga(self, snap: _Snapshot, g: Geometry, size):
        crtc = snap.crtc
        collapse = crtc[0x17] & 0x03 == 0x03
        if g.depth == 8:
            # 256 colours: four planes give four consecutive pixels per address, which the
            # interleaved VRAM stores as consecutive bytes (see memory.py).
            vram = self.vram
            data = bytearray()
            for y in range(g.height):
                at = 4 * self._line_address(snap, y, collapse, raw=True)
                data += bytes(vram[at:at + g.width]).ljust(g.width, b"\0")
            return self._indexed(snap, size, self._pel_masked(snap, data))
        step = self._fetch_step(crtc)
        if g.depth == 2:
            return self._render_cga4(snap, g, size, collapse, step)
        starts = [self._line_address(snap, y, collapse) for y in range(g.height)]
        return self._planar(snap, size, starts, g.width // 8, step)

    def _render_cga4(self, snap: _Snapshot, g: Geometry, size, collapse: bool, step: int):
        vram = self.vram
        fetches = g.width // 8          # each fetch: 4 pixels from plane 0, 4 from plane 1
        data = bytearray()
        for y in range(g.height):
            mem = self._line_address(snap, y, collapse)
            for k in range(fetches):
                at = 4 * ((mem + k * step) & 0xFFFF)
                data += _CGA4[vram[at]] + _CGA4[vram[at + 1]]
        return self._indexed(snap, size, data.translate(snap.attr_lut + bytes(240)))

    def _planar(self, snap: _Snapshot, size, starts: list[int], nbytes: int, step: int):
        """16-colour planar: bit 7-x of the four planes' bytes form pixel x's colour."""
        from PIL import Image, ImageChops

        vram, width, height = self.vram, size[0], len(starts)
        limit = len(vram)
        planes = [bytearray() for _ in range(4)]
        for mem in starts:
            lo, hi = 4 * mem, 4 * (mem + nbytes * step)
            for p in range(4):
                chunk = bytes(vram[lo + p:min(hi, limit):4 * step])
                planes[p] += chunk.ljust(nbytes, b"\0")
        index = None
        for p in range(4):
            bit = Image.frombytes("1", (nbytes * 8, height), bytes(planes[p])).convert("L")
            bit = bit.point(lambda v, weight=1 << p: weight if v else 0)
            index = bit if index is None else ImageChops.add(index, bit)
        index = index.point(list(snap.attr_lut) + [0] * 240).crop((0, 0, width, height))
        return self._indexed(snap, (width, height), index.tobytes())

    def _render_vbe(self, snap: _Snapshot, g: Geometry, size):
        from PIL import Image

        xres, _, bpp, line_offset, start = snap.dispi
        yres = g.height
        if bpp == 4:
            # The planar VBE depth goes through the VGA's planes and attribute palette.
            stride = line_offset // 4
            starts = [start // 4 + y * stride for y in range(yres)]
            return self._planar(snap, size, starts, xres // 8, 1)
        vram = self.vram
        row = xres * ((bpp + 7) // 8)
        if line_offset == row:
            data = bytes(vram[start:start + row * yres])
        else:
            data = b"".join(bytes(vram[start + y * line_offset:start + y * line_offset + row])
                            for y in range(yres))
        data = data.ljust(row * yres, b"\0")
        if bpp == 8:
            return self._indexed(snap, size, self._pel_masked(snap, data))
        rawmode = {15: "BGR;15", 16: "BGR;16", 24: "BGR", 32: "BGRX"}[bpp]
        return Image.frombytes("RGB", size, data, "raw", rawmode)
