"""The standard VGA + Bochs DISPI driven the way a VGA BIOS and drivers drive it: mode tables
programmed port by port, text written through the odd/even window, fonts loaded into plane 2,
pixels drawn through every write mode, VBE modes set through DISPI, and the screen read back as
text and as a PNG decoded again with Pillow.

Register values of the standard modes are those of the IBM VGA Technical Reference (as tabulated
on FreeVGA's "standard VGA modes" pages)."""
from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from hvm.bus import MmioBus, PortIOBus
from hvm.devices.pci.config import BAR0, COMMAND, ROM_BAR
from hvm.devices.vga import PORT_RANGES, Vga
from hvm.devices.vga import vbe

A0000, B8000 = 0xA0000, 0xB8000

MODE3 = dict(       # 80x25 16-colour text, 720x400
    misc=0x67,
    seq=(0x03, 0x00, 0x03, 0x00, 0x02),
    crtc=(0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00,
          0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF),
    gc=(0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF),
    attr=(0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
          0x3E, 0x3F, 0x0C, 0x00, 0x0F, 0x08, 0x00),
)
MODE13 = dict(      # 320x200 256 colours, chain-4
    misc=0x63,
    seq=(0x03, 0x01, 0x0F, 0x00, 0x0E),
    crtc=(0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF),
    gc=(0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF),
    attr=tuple(range(16)) + (0x41, 0x00, 0x0F, 0x00, 0x00),
)
MODE12 = dict(      # 640x480 16 colours, planar
    misc=0xE3,
    seq=(0x03, 0x01, 0x0F, 0x00, 0x06),
    crtc=(0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF),
    gc=(0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF),
    attr=(0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
          0x3E, 0x3F, 0x01, 0x00, 0x0F, 0x00, 0x00),
)
MODE4 = dict(       # 320x200 CGA 4 colours, odd/even with interleaved scan lines
    misc=0x63,
    seq=(0x03, 0x09, 0x03, 0x00, 0x02),
    crtc=(0x2D, 0x27, 0x28, 0x90, 0x2B, 0x80, 0xBF, 0x1F, 0x00, 0xC1, 0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x14, 0x00, 0x96, 0xB9, 0xA2, 0xFF),
    gc=(0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0F, 0x00, 0xFF),
    attr=(0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
          0x16, 0x17, 0x01, 0x00, 0x03, 0x00, 0x00),
)


# -- a little VGA BIOS -------------------------------------------------------------------------
class Rig:
    def __init__(self):
        self.vga = Vga()
        self.pio, self.mmio = PortIOBus(), MmioBus()
        self.vga.attach(lambda b, n, d, name: self.pio.register(b, n, d, name),
                        lambda b, n, d, name: self.mmio.register(b, n, d, name))

    def outb(self, port, value):
        self.pio.write(port, 1, value)

    def outw(self, port, value):
        self.pio.write(port, 2, value)

    def inb(self, port):
        return self.pio.read(port, 1)

    def crtc(self, index, value):
        self.outw(0x3D4, value << 8 | index)

    def gc(self, index, value):
        self.outw(0x3CE, value << 8 | index)

    def seq(self, index, value):
        self.outw(0x3C4, value << 8 | index)

    def set_mode(self, mode):
        """The order a VGA BIOS uses: sequencer held in reset while the clocking changes, CRTC
        unprotected first, attribute flip-flop reset before the palette, video enabled last."""
        self.outb(0x3C2, mode["misc"])
        self.seq(0, 0x01)
        for i, v in enumerate(mode["seq"][1:], start=1):
            self.seq(i, v)
        self.seq(0, mode["seq"][0])
        self.crtc(0x11, 0x00)
        for i, v in enumerate(mode["crtc"]):
            self.crtc(i, v)
        for i, v in enumerate(mode["gc"]):
            self.gc(i, v)
        self.inb(0x3DA)
        for i, v in enumerate(mode["attr"]):
            self.outb(0x3C0, i)
            self.outb(0x3C0, v)
        self.outb(0x3C0, 0x20)

    def ega_palette(self):
        """The 64 EGA colours in DAC entries 0-63 (6-bit rgbRGB: primaries 2/3, secondaries 1/3)."""
        self.outb(0x3C8, 0)
        for i in range(64):
            for primary, secondary in ((2, 5), (1, 4), (0, 3)):
                self.outb(0x3C9, 42 * (i >> primary & 1) + 21 * (i >> secondary & 1))

    def dac(self, index, r, g, b):
        self.outb(0x3C8, index)
        for v in (r, g, b):
            self.outb(0x3C9, v)

    def load_font(self, glyph, height=16):
        """Plane 2 through the planar window at A0000, as the BIOS's font loader does."""
        self.seq(0x02, 0x04)
        self.seq(0x04, 0x07)
        self.gc(0x04, 0x02)
        self.gc(0x05, 0x00)
        self.gc(0x06, 0x04)
        for ch in range(256):
            for line in range(height):
                self.mmio.write(A0000 + ch * 32 + line, 1, glyph(ch, line))
        self.seq(0x02, 0x03)
        self.seq(0x04, 0x02)
        self.gc(0x04, 0x00)
        self.gc(0x05, 0x10)
        self.gc(0x06, 0x0E)

    def dispi(self, index, value=None):
        self.outw(0x1CE, index)
        if value is None:
            return self.pio.read(0x1CF, 2)
        self.outw(0x1CF, value)
        return None

    def pixels(self):
        im = Image.open(io.BytesIO(self.vga.screen.png()))
        assert im.format == "PNG"
        return im.convert("RGB")


def glyph(ch, line):
    """A font nobody could mistake for another: every line differs and no glyph is empty."""
    return (ch ^ (line * 0x1D)) & 0xFF


def ega(i):
    """EGA colour ``i`` as 8-bit RGB after the DAC's 6-to-8-bit widening."""
    def c(v):
        return v << 2 | v >> 4
    return tuple(c(42 * (i >> p & 1) + 21 * (i >> s & 1)) for p, s in ((2, 5), (1, 4), (0, 3)))


@pytest.fixture
def rig():
    return Rig()


@pytest.fixture
def text(rig):
    rig.set_mode(MODE3)
    rig.ega_palette()
    rig.load_font(glyph)
    return rig


def put(rig, row, col, s, attr=0x07):
    for i, ch in enumerate(s.encode("cp437") if isinstance(s, str) else s):
        rig.mmio.write(B8000 + 2 * (row * 80 + col + i), 2, attr << 8 | ch)


# -- text mode ---------------------------------------------------------------------------------
def test_mode3_text_reads_back_as_lines(text):
    assert text.vga.screen.mode() == "text 80x25"
    put(text, 0, 0, "Hello, world")
    put(text, 3, 10, b"\xc9\xcd\xbb \x01 \x82\x7f")
    lines = text.vga.screen.text().split("\n")
    assert len(lines) == 25
    assert lines[0] == "Hello, world"
    assert lines[3] == " " * 10 + "╔═╗ ☺ é⌂"
    assert lines[1] == ""


def test_byte_writes_go_to_planes_0_and_1_at_the_even_offset(text):
    text.mmio.write(B8000 + 6, 1, ord("Z"))
    text.mmio.write(B8000 + 7, 1, 0x4E)
    vram = text.vga.vram
    assert vram[4 * 6 + 0] == ord("Z") and vram[4 * 6 + 1] == 0x4E
    assert text.mmio.read(B8000 + 6, 2) == 0x4E00 | ord("Z")
    assert text.vga.screen.text().split("\n")[0] == "   Z"


def test_start_address_scrolls_the_text(text):
    put(text, 0, 0, "first")
    put(text, 1, 0, "second")
    text.crtc(0x0C, 0)
    text.crtc(0x0D, 80)                     # one row of 80 characters (word addresses)
    assert text.vga.screen.text().split("\n")[0] == "second"


def test_font_is_read_from_plane_2(text):
    vram = text.vga.vram
    assert all(vram[4 * (0x41 * 32 + line) + 2] == glyph(0x41, line) for line in range(16))
    # Loading the font did not disturb the character planes.
    assert vram[0] == 0 and vram[1] == 0


def test_text_png_draws_glyphs_in_attribute_colours(text):
    put(text, 1, 2, "A", attr=0x1E)          # yellow on blue
    im = text.pixels()
    assert im.size == (720, 400)
    yellow, blue = ega(0x3E), ega(0x01)
    for line in range(16):
        bits = glyph(ord("A"), line)
        for x in range(8):
            want = yellow if bits >> (7 - x) & 1 else blue
            assert im.getpixel((2 * 9 + x, 16 + line)) == want, (x, line)
        assert im.getpixel((2 * 9 + 8, 16 + line)) == blue        # the ninth dot is background


def test_line_drawing_characters_extend_into_the_ninth_column(text):
    put(text, 0, 0, b"\xc4\x41", attr=0x0F)
    im = text.pixels()
    for line in range(16):
        eighth = im.getpixel((7, line))
        assert im.getpixel((8, line)) == eighth                    # 0xC4 repeats dot 8
        assert im.getpixel((9 + 8, line)) == ega(0)                # 'A' does not


def test_blink_bit_selects_background_intensity_only_when_blink_is_off(text):
    put(text, 0, 0, b"\x00", attr=0xC0)     # font glyph 0 line 0 is all background
    assert text.pixels().getpixel((0, 0)) == ega(0x04)               # blink on: bit 7 blinks
    text.inb(0x3DA)
    text.outb(0x3C0, 0x10)
    text.outb(0x3C0, 0x04)                  # attribute mode control without blink
    text.outb(0x3C0, 0x20)
    assert text.pixels().getpixel((0, 0)) == ega(0x3C)               # colour 12 via AR12


def test_cursor_is_drawn_on_its_scan_lines(text):
    put(text, 2, 5, b"\x00", attr=0x0A)
    loc = 2 * 80 + 5
    text.crtc(0x0E, loc >> 8)
    text.crtc(0x0F, loc & 0xFF)
    im = text.pixels()
    green = ega(0x3A)
    x, y = 5 * 9, 2 * 16
    assert all(im.getpixel((x + dx, y + 13)) == green for dx in range(9))
    assert all(im.getpixel((x + dx, y + 14)) == green for dx in range(9))
    text.crtc(0x0A, 0x20 | 0x0D)            # cursor off
    im = text.pixels()
    assert im.getpixel((x + 8, y + 13)) == ega(0)


def test_second_font_map_chosen_by_attribute_bit_3(text):
    # Character map A at 16 KiB in plane 2, B at 0: SR3 = A-select 1 (bits 3-2), B-select 0.
    text.seq(0x02, 0x04)
    text.seq(0x04, 0x07)
    text.gc(0x04, 0x02)
    text.gc(0x05, 0x00)
    text.gc(0x06, 0x04)
    for line in range(16):
        text.mmio.write(A0000 + 0x4000 + 0x41 * 32 + line, 1, 0xFF)
    text.seq(0x02, 0x03)
    text.seq(0x04, 0x02)
    text.gc(0x05, 0x10)
    text.gc(0x06, 0x0E)
    text.seq(0x03, 0x04)
    put(text, 0, 0, "A", attr=0x0F)          # bit 3 set: map A (solid)
    put(text, 0, 1, "A", attr=0x07)          # bit 3 clear: map B (the test font)
    im = text.pixels()
    assert all(im.getpixel((x, 5)) == ega(0x3F) for x in range(8))
    bits = glyph(0x41, 5)
    assert [im.getpixel((9 + x, 5)) == ega(0x07) for x in range(8)] == [
        bool(bits >> (7 - x) & 1) for x in range(8)]


def test_blanked_screen_is_black(text):
    put(text, 0, 0, b"\xdb" * 4, attr=0x0F)
    text.inb(0x3DA)
    text.outb(0x3C0, 0x00)                  # palette address source cleared: no video
    im = text.pixels()
    assert im.size == (720, 400) and im.getbbox() is None
    assert text.vga.screen.text().startswith("████")


# -- mode 13h ----------------------------------------------------------------------------------
def test_mode13_pixels_index_the_dac(rig):
    rig.set_mode(MODE13)
    assert rig.vga.screen.mode() == "vga 320x200x8"
    rig.dac(1, 63, 0, 0)
    rig.dac(200, 10, 20, 30)
    rig.mmio.write(A0000 + 0, 1, 1)
    rig.mmio.write(A0000 + 199 * 320 + 319, 1, 200)
    rig.mmio.write(A0000 + 100 * 320 + 4, 4, 0x01C80001)   # a dword: four pixels at once
    vram = rig.vga.vram
    assert vram[100 * 320 + 6] == 200       # chain-4 lands linearly in VRAM (memory.py)
    im = rig.pixels()
    assert im.size == (320, 200)
    assert im.getpixel((0, 0)) == (255, 0, 0)
    assert im.getpixel((319, 199)) == (40, 81, 121)
    assert [im.getpixel((x, 100)) for x in range(4, 8)] == [(255, 0, 0), (0, 0, 0), (40, 81, 121),
                                                             (255, 0, 0)]
    assert rig.mmio.read(A0000 + 199 * 320 + 319, 1) == 200
    rig.outb(0x3C6, 0x7F)                   # the PEL mask applies to DAC indices: 200 -> 72
    rig.dac(200 & 0x7F, 63, 63, 63)
    assert rig.pixels().getpixel((319, 199)) == (255, 255, 255)
    assert rig.vga.screen.text() == ""


# -- mode 12h ----------------------------------------------------------------------------------
def plot_mode2(rig, x, y, colour):
    """The classic planar pixel: bit mask for the pixel, a latch-loading read, write mode 2."""
    offset = y * 80 + x // 8
    rig.gc(0x05, 0x02)
    rig.gc(0x08, 0x80 >> (x & 7))
    rig.mmio.read(A0000 + offset, 1)
    rig.mmio.write(A0000 + offset, 1, colour)
    rig.gc(0x08, 0xFF)
    rig.gc(0x05, 0x00)


def test_mode12_write_mode_2_and_map_mask(rig):
    rig.set_mode(MODE12)
    rig.ega_palette()
    assert rig.vga.screen.mode() == "vga 640x480x4"
    plot_mode2(rig, 3, 0, 0x0E)
    plot_mode2(rig, 4, 0, 0x09)
    plot_mode2(rig, 639, 479, 0x0F)
    rig.seq(0x02, 0x04)                     # map mask: plane 2 only
    rig.mmio.write(A0000 + 10 * 80 + 1, 1, 0xF0)
    rig.seq(0x02, 0x0F)
    im = rig.pixels()
    assert im.size == (640, 480)
    assert im.getpixel((3, 0)) == ega(0x3E)
    assert im.getpixel((4, 0)) == ega(0x39)
    assert im.getpixel((2, 0)) == ega(0) and im.getpixel((5, 0)) == ega(0)
    assert im.getpixel((639, 479)) == ega(0x3F)
    assert [im.getpixel((8 + x, 10)) for x in range(8)] == [ega(0x04)] * 4 + [ega(0)] * 4
    rig.inb(0x3DA)
    rig.outb(0x3C0, 0x12)
    rig.outb(0x3C0, 0x0B)                   # colour plane enable drops plane 2
    rig.outb(0x3C0, 0x20)
    im = rig.pixels()
    assert im.getpixel((3, 0)) == ega(0x3A) and im.getpixel((8, 10)) == ega(0)


# -- CGA mode 4 --------------------------------------------------------------------------------
def test_mode4_interleaves_scan_lines_and_packs_two_bits_per_pixel(rig):
    rig.set_mode(MODE4)
    rig.ega_palette()
    assert rig.vga.screen.mode() == "vga 320x200x2"
    rig.mmio.write(B8000, 1, 0b11100100)           # line 0: colours 3, 2, 1, 0
    rig.mmio.write(B8000 + 1, 1, 0b01000000)       # line 0, pixels 4-7: colour 1 then 0s
    rig.mmio.write(B8000 + 0x2000, 1, 0b10000000)  # line 1 lives in the second bank
    im = rig.pixels()
    assert im.size == (320, 200)
    assert [im.getpixel((x, 0)) for x in range(5)] == [ega(0x17), ega(0x15), ega(0x13), ega(0),
                                                        ega(0x13)]
    assert im.getpixel((0, 1)) == ega(0x15)


# -- the graphics controller's pipeline --------------------------------------------------------
@pytest.fixture
def planar(rig):
    rig.set_mode(MODE12)
    return rig


def planes(rig, offset):
    return bytes(rig.vga.vram[4 * offset:4 * offset + 4])


def test_write_mode_0_set_reset_rotate_function_and_bit_mask(planar):
    r = planar
    r.gc(0x01, 0x0F)
    r.gc(0x00, 0x05)                        # set/reset: planes 0 and 2 all ones
    r.mmio.write(A0000, 1, 0x00)
    assert planes(r, 0) == b"\xff\x00\xff\x00"
    r.gc(0x01, 0x00)
    r.gc(0x03, 0x01)                        # rotate right by one
    r.mmio.write(A0000 + 1, 1, 0x01)
    assert planes(r, 1) == b"\x80" * 4
    r.gc(0x03, 0x00)
    r.mmio.read(A0000, 1)                   # latches = ff 00 ff 00
    r.gc(0x08, 0x0F)                        # only the low nibble comes from the CPU
    r.mmio.write(A0000 + 2, 1, 0x33)
    assert planes(r, 2) == b"\xf3\x03\xf3\x03"
    r.gc(0x08, 0xFF)
    for function, want in ((1, b"\x33\x00\x33\x00"), (2, b"\xff\x33\xff\x33"),
                           (3, b"\xcc\x33\xcc\x33")):
        r.mmio.read(A0000, 1)
        r.gc(0x03, function << 3)
        r.mmio.write(A0000 + 3, 1, 0x33)
        assert planes(r, 3) == want, function
    r.gc(0x03, 0x00)


def test_write_mode_1_copies_the_latches(planar):
    r = planar
    r.vga.vram[4 * 50:4 * 50 + 4] = b"\x12\x34\x56\x78"
    r.gc(0x05, 0x01)
    r.mmio.read(A0000 + 50, 1)
    r.mmio.write(A0000 + 60, 1, 0xAA)       # the CPU's byte is ignored
    assert planes(r, 60) == b"\x12\x34\x56\x78"


def test_write_mode_3_uses_rotated_data_as_bit_mask(planar):
    r = planar
    r.vga.vram[0:4] = b"\x00\xff\x00\xff"
    r.gc(0x05, 0x03)
    r.gc(0x00, 0x03)                        # colour 3: planes 0 and 1
    r.gc(0x08, 0x3C)
    r.mmio.read(A0000, 1)
    r.mmio.write(A0000, 1, 0xF0)            # effective mask 0xF0 & 0x3C = 0x30
    assert planes(r, 0) == b"\x30\xff\x00\xcf"


def test_read_modes(planar):
    r = planar
    r.vga.vram[0:4] = b"\x0f\x33\x55\xff"
    for plane in range(4):
        r.gc(0x04, plane)
        assert r.mmio.read(A0000, 1) == r.vga.vram[plane]
    r.gc(0x05, 0x08)                        # read mode 1: colour compare
    r.gc(0x02, 0x0F)
    r.gc(0x07, 0x0F)
    # Pixels whose four plane bits are all ones: bit b set in 0x0f, 0x33, 0x55 and 0xff.
    assert r.mmio.read(A0000, 1) == 0x0F & 0x33 & 0x55 & 0xFF
    r.gc(0x07, 0x00)                        # nothing cared about: everything matches
    assert r.mmio.read(A0000, 1) == 0xFF
    r.gc(0x07, 0x01)
    r.gc(0x02, 0x00)
    assert r.mmio.read(A0000, 1) == 0xF0


def test_memory_map_select_and_ram_enable(planar):
    r = planar
    r.gc(0x06, 0x09)                        # graphics, B0000-B7FFF
    r.mmio.write(0xB0000 + 5, 1, 0x77)
    assert r.vga.vram[4 * 5] == 0x77
    assert r.mmio.read(A0000 + 5, 1) == 0xFF
    r.mmio.write(A0000 + 6, 1, 0x77)
    assert r.vga.vram[4 * 6] == 0
    r.gc(0x06, 0x05)
    r.outb(0x3C2, 0xE1)                     # RAM enable cleared
    r.mmio.write(A0000 + 7, 1, 0x77)
    assert r.vga.vram[4 * 7] == 0 and r.mmio.read(A0000 + 5, 1) == 0xFF


# -- register protocol -------------------------------------------------------------------------
def test_attribute_flip_flop_is_reset_by_reading_input_status_1(rig):
    rig.outb(0x3C2, 0x01)
    rig.inb(0x3DA)
    rig.outb(0x3C0, 0x11)
    rig.outb(0x3C0, 0x2A)                   # overscan colour
    rig.outb(0x3C0, 0x11)
    assert rig.inb(0x3C0) == 0x11 and rig.inb(0x3C1) == 0x2A
    rig.outb(0x3C0, 0x05)                   # flip-flop now expects data ...
    rig.inb(0x3DA)                          # ... but the status read resets it
    rig.outb(0x3C0, 0x33)                   # so this is an index (PAS set)
    assert rig.inb(0x3C0) == 0x33
    assert rig.vga.regs.attr[0x05] == 0
    rig.outb(0x3C0, 0x3F)
    assert rig.vga.regs.attr[0x13] == 0x0F  # panning keeps 4 bits


def test_word_out_writes_index_then_data_and_word_in_reads_both(rig):
    rig.outw(0x3CE, 0x2A08)
    assert rig.vga.regs.gc[8] == 0x2A
    assert rig.pio.read(0x3CE, 2) == 0x2A08
    rig.gc(0x05, 0xFF)
    assert rig.pio.read(0x3CF, 1) == 0x7B   # unimplemented bits read as zero
    rig.seq(0x02, 0xFF)
    assert rig.pio.read(0x3C4, 2) == 0x0F02


def test_dac_write_and_read_cycles(rig):
    rig.outb(0x3C8, 5)
    assert rig.inb(0x3C7) == 0x00
    for v in (0x3F, 0x20, 0x41):
        rig.outb(0x3C9, v)
    rig.outb(0x3C9, 0x11)                   # a partial write to entry 6 ...
    assert rig.vga.regs.dac[18:21] == b"\0\0\0"          # ... commits nothing yet
    assert rig.inb(0x3C8) == 6
    rig.outb(0x3C7, 5)
    assert rig.inb(0x3C7) == 0x03
    assert [rig.inb(0x3C9) for _ in range(4)] == [0x3F, 0x20, 0x01, 0x00]
    rig.outb(0x3C6, 0x0F)
    assert rig.inb(0x3C6) == 0x0F


def test_crtc_write_protect_and_io_address_select(rig):
    rig.outb(0x3C2, 0x01)
    rig.crtc(0x01, 0x4F)
    rig.crtc(0x07, 0x00)
    rig.crtc(0x11, 0x80)
    rig.crtc(0x01, 0x27)                    # ignored
    rig.crtc(0x07, 0xFF)                    # only the line compare bit 8 takes
    rig.outb(0x3D4, 0x01)
    assert rig.inb(0x3D5) == 0x4F
    rig.outb(0x3D4, 0x07)
    assert rig.inb(0x3D5) == 0x10
    rig.outb(0x3C2, 0x00)                   # monochrome addressing: CRTC moves to 0x3B4
    assert rig.inb(0x3D5) == 0xFF and rig.inb(0x3B4) == 0x07 and rig.inb(0x3B5) == 0x10
    assert rig.inb(0x3CC) == 0x00


def test_retrace_polling_terminates(rig):
    rig.outb(0x3C2, 0x01)
    for _ in range(3):
        for want in (0, 8):                 # wait for retrace to end, then to begin
            for _ in range(100):
                if rig.inb(0x3DA) & 8 == want:
                    break
            else:
                pytest.fail("vertical retrace never changed")


def test_port_ranges_leave_neighbours_alone(rig):
    claimed = {b + i for b, n in PORT_RANGES for i in range(n)} | {0x1CE, 0x1CF, 0x1D0}
    assert not claimed & {0x3B0, 0x3B3, 0x3BC, 0x3BD, 0x3BE, 0x3D0, 0x3D8, 0x3D9, 0x3DF}
    assert {m.name for m in rig.mmio.mappings()} == {"vga-memory"}
    assert rig.mmio.mappings()[0].base == A0000 and rig.mmio.mappings()[0].length == 0x20000


# -- Bochs VBE DISPI ---------------------------------------------------------------------------
def test_dispi_id_negotiation_and_memory_size(rig):
    assert rig.dispi(vbe.INDEX_ID) == vbe.ID5
    rig.dispi(vbe.INDEX_ID, vbe.ID0)
    assert rig.dispi(vbe.INDEX_ID) == vbe.ID0
    rig.dispi(vbe.INDEX_ID, 0x1234)
    assert rig.dispi(vbe.INDEX_ID) == vbe.ID0
    rig.dispi(vbe.INDEX_ID, 0xB0C4)
    assert rig.dispi(vbe.INDEX_ID) == 0xB0C4
    assert rig.dispi(vbe.INDEX_VIDEO_MEMORY_64K) == 256
    assert rig.pio.read(0x1CE, 2) == vbe.INDEX_VIDEO_MEMORY_64K
    assert rig.pio.read(0x1D0, 2) == 256    # the alternative data port


def test_dispi_getcaps(rig):
    rig.dispi(vbe.INDEX_XRES, 800)
    en = rig.dispi(vbe.INDEX_ENABLE)
    rig.dispi(vbe.INDEX_ENABLE, en | vbe.GETCAPS)
    assert (rig.dispi(vbe.INDEX_XRES), rig.dispi(vbe.INDEX_YRES), rig.dispi(vbe.INDEX_BPP)) == (
        vbe.MAX_XRES, vbe.MAX_YRES, vbe.MAX_BPP)
    rig.dispi(vbe.INDEX_ENABLE, en)
    assert rig.dispi(vbe.INDEX_XRES) == 800
    rig.dispi(vbe.INDEX_BPP, 7)             # not a depth: refused
    rig.dispi(vbe.INDEX_XRES, vbe.MAX_XRES + 8)
    assert (rig.dispi(vbe.INDEX_BPP), rig.dispi(vbe.INDEX_XRES)) == (8, 800)


def set_vbe(rig, xres, yres, bpp, flags=vbe.LFB_ENABLED):
    """SeaBIOS's order: disable, depth, size, bank 0, enable; then unblank as drivers do."""
    rig.dispi(vbe.INDEX_ENABLE, 0)
    rig.dispi(vbe.INDEX_BPP, bpp)
    rig.dispi(vbe.INDEX_XRES, xres)
    rig.dispi(vbe.INDEX_YRES, yres)
    rig.dispi(vbe.INDEX_BANK, 0)
    rig.dispi(vbe.INDEX_ENABLE, vbe.ENABLED | flags)
    rig.inb(0x3DA)
    rig.outb(0x3C0, 0x20)


def test_vbe_640x480x32_through_bar0_and_the_banked_window(rig):
    set_vbe(rig, 640, 480, 32)
    assert rig.vga.screen.mode() == "vbe 640x480x32"
    assert rig.dispi(vbe.INDEX_VIRT_WIDTH) == 640
    assert rig.dispi(vbe.INDEX_VIRT_HEIGHT) == (16 << 20) // 2560
    lfb = rig.vga.pci.bars[0].device
    lfb.write((10 * 640 + 20) * 4, 4, 0x00FF0000)          # red
    lfb.write((479 * 640 + 639) * 4, 8, 0x0000FF00_000000FF)   # blue at the end (+ past it)
    assert lfb.read((10 * 640 + 20) * 4, 4) == 0x00FF0000
    # Bank 1 shows VRAM 64 KiB-128 KiB at 0xA0000: pixel 16384 + 7 is (7 + 384, 25).
    rig.dispi(vbe.INDEX_BANK, 1)
    rig.mmio.write(A0000 + 7 * 4, 4, 0x0000FF00)          # green
    assert rig.mmio.read(A0000 + 7 * 4, 4) == 0x0000FF00
    im = rig.pixels()
    assert im.size == (640, 480)
    assert im.getpixel((20, 10)) == (255, 0, 0)
    assert im.getpixel((639, 479)) == (0, 0, 255)
    assert im.getpixel((391, 25)) == (0, 255, 0)
    assert im.getpixel((0, 0)) == (0, 0, 0)
    # The board may map vga.vram directly: it is the same memory the BAR device reaches.
    view = memoryview(rig.vga.vram)
    view[0:4] = b"\xff\xff\xff\x00"
    assert rig.pixels().getpixel((0, 0)) == (255, 255, 255)


def test_vbe_mode_larger_than_vram_shows_only_the_lines_that_exist(rig):
    set_vbe(rig, 16000, 12000, 32)
    assert rig.vga.screen.mode() == "vbe 16000x262x32"      # 16 MiB / 64000 bytes per line
    assert rig.vga.screen.image().size == (16000, 262)


def test_vbe_bank_out_of_range_is_refused(rig):
    set_vbe(rig, 640, 480, 8)
    rig.dispi(vbe.INDEX_BANK, 3)
    rig.dispi(vbe.INDEX_BANK, 256)
    assert rig.dispi(vbe.INDEX_BANK) == 3


@pytest.mark.parametrize("bpp,pixel,rgb", [
    (8, b"\x07", None),
    (15, (0x7C00).to_bytes(2, "little"), (255, 0, 0)),
    (16, (0x07E0).to_bytes(2, "little"), (0, 255, 0)),
    (24, b"\xff\x00\x00", (0, 0, 255)),
    (32, b"\x00\x80\xff\x00", (255, 128, 0)),
])
def test_vbe_depths(rig, bpp, pixel, rgb):
    set_vbe(rig, 320, 240, bpp)
    rig.dac(7, 0x10, 0x20, 0x30)
    size = len(pixel)
    at = (5 * 320 + 9) * size
    rig.vga.vram[at:at + size] = pixel
    im = rig.pixels()
    assert im.size == (320, 240)
    want = rgb or (0x41, 0x82, 0xC3)      # 6-bit 0x10/0x20/0x30, top bits replicated
    assert im.getpixel((9, 5)) == want
    assert im.getpixel((10, 5)) == (0, 0, 0)


def test_vbe_8bit_dac(rig):
    set_vbe(rig, 64, 64, 8, vbe.LFB_ENABLED | vbe.DAC_8BIT)
    rig.dac(1, 0xFE, 0x80, 0x01)
    rig.vga.vram[0] = 1
    assert rig.pixels().getpixel((0, 0)) == (0xFE, 0x80, 0x01)


def test_vbe_enable_clears_unless_noclearmem(rig):
    rig.vga.vram[100] = 0x55
    set_vbe(rig, 64, 64, 32, vbe.NOCLEARMEM)
    assert rig.vga.vram[100] == 0x55
    set_vbe(rig, 64, 64, 32)
    assert rig.vga.vram[100] == 0


def test_vbe_virtual_width_and_display_start(rig):
    set_vbe(rig, 320, 200, 32)
    rig.dispi(vbe.INDEX_VIRT_WIDTH, 1024)
    assert rig.dispi(vbe.INDEX_VIRT_WIDTH) == 1024
    rig.dispi(vbe.INDEX_X_OFFSET, 8)
    rig.dispi(vbe.INDEX_Y_OFFSET, 100)
    at = (100 * 1024 + 8) * 4
    rig.vga.vram[at:at + 4] = b"\x00\x00\xff\x00"
    at = (101 * 1024 + 8) * 4
    rig.vga.vram[at:at + 4] = b"\xff\x00\x00\x00"
    im = rig.pixels()
    assert im.getpixel((0, 0)) == (255, 0, 0) and im.getpixel((0, 1)) == (0, 0, 255)


def test_vbe_planar_4bpp_goes_through_the_vga_pipeline(rig):
    rig.set_mode(MODE12)
    rig.ega_palette()
    set_vbe(rig, 800, 600, 4)
    assert rig.vga.screen.mode() == "vbe 800x600x4"
    # 100 plane bytes per line; line 700 is past the first 64 KiB of plane offsets.
    offset = 700 * 100
    rig.dispi(vbe.INDEX_Y_OFFSET, 0)
    rig.dispi(vbe.INDEX_BANK, offset >> 16)
    rig.gc(0x05, 0x02)
    rig.gc(0x08, 0x80)
    rig.mmio.read(A0000 + (offset & 0xFFFF), 1)
    rig.mmio.write(A0000 + (offset & 0xFFFF), 1, 0x0C)
    assert bytes(rig.vga.vram[4 * offset:4 * offset + 4]) == b"\x00\x00\x80\x80"
    rig.dispi(vbe.INDEX_BANK, 0)
    rig.mmio.write(A0000 + 100 + 1, 1, 0x0E)            # line 1, pixel 8
    im = rig.pixels()
    assert im.getpixel((8, 1)) == ega(0x3E)
    rig.dispi(vbe.INDEX_Y_OFFSET, 600)                  # scroll so line 700 is on screen
    assert rig.pixels().getpixel((0, 100)) == ega(0x3C)


def test_disabling_dispi_gives_the_window_back_to_the_vga(text):
    set_vbe(text, 640, 480, 32)
    text.mmio.write(A0000, 4, 0x11223344)
    assert bytes(text.vga.vram[0:4]) == b"\x44\x33\x22\x11"
    text.dispi(vbe.INDEX_ENABLE, 0)
    assert text.vga.screen.mode() == "text 80x25"
    text.mmio.write(A0000, 1, 0x99)                     # text mode decodes B8000 only
    assert text.vga.vram[0] == 0x44


# -- PCI ---------------------------------------------------------------------------------------
def test_pci_header_matches_qemus_standard_vga(rig):
    fn = rig.vga.pci
    assert fn.config_read(0x00, 4) == 0x11111234
    assert fn.config_read(0x08, 4) == 0x03000002        # class 03/00/00, revision 2
    assert fn.config_read(0x2C, 4) == 0x11001AF4
    fn.config_write(BAR0, 4, 0xFFFFFFFF)
    assert fn.config_read(BAR0, 4) == 0xFF000008        # 16 MiB, 32-bit, prefetchable
    fn.config_write(BAR0 + 4, 4, 0xFFFFFFFF)
    assert fn.config_read(BAR0 + 4, 4) == 0             # BAR1 reserved
    fn.config_write(BAR0 + 8, 4, 0xFFFFFFFF)
    assert fn.config_read(BAR0 + 8, 4) == 0xFFFFF000    # 4 KiB MMIO
    fn.config_write(BAR0, 4, 0xFD000000)
    fn.config_write(BAR0 + 8, 4, 0xFEBF0000)
    fn.config_write(COMMAND, 2, 0x0003)
    assert fn.mapping() == (((0, 0xFD000000), (2, 0xFEBF0000)), None)
    assert len(rig.vga.vram) == fn.bars[0].size == 16 << 20


BIOS = "/usr/share/seabios/vgabios-stdvga.bin"


@pytest.mark.skipif(not os.path.exists(BIOS), reason="Debian's seabios package not installed")
def test_vga_bios_rom_matches_the_function():
    vga = Vga()
    data = open(BIOS, "rb").read()
    vga.set_bios(data)
    fn = vga.pci
    assert fn.rom[:2] == b"\x55\xaa"
    pcir = int.from_bytes(fn.rom[0x18:0x1A], "little")
    assert fn.rom[pcir:pcir + 4] == b"PCIR"
    # The firmware runs an option ROM only if its PCI data structure names this function.
    assert fn.rom[pcir + 4:pcir + 8] == fn.config[0:4]
    fn.config_write(ROM_BAR, 4, 0xFFFFFFFF)
    assert fn.config_read(ROM_BAR, 4) == 0xFFFF0001     # 64 KiB ROM


def test_mmio_bar_reaches_ports_dispi_and_qemu_extensions(rig):
    mm = rig.vga.pci.bars[2].device
    mm.write(0x404, 2, 0x0F02)                          # 0x3C4/0x3C5 in one access
    assert rig.vga.regs.seq[2] == 0x0F
    assert mm.read(0x405, 1) == 0x0F
    assert mm.read(0x500, 2) == vbe.ID5
    mm.write(0x500 + 2 * vbe.INDEX_XRES, 2, 1024)
    mm.write(0x500 + 2 * vbe.INDEX_YRES, 4, 768 | 32 << 16)   # YRES and BPP together
    assert rig.dispi(vbe.INDEX_XRES) == 1024 and rig.dispi(vbe.INDEX_BPP) == 32
    mm.write(0x500 + 2 * vbe.INDEX_ENABLE, 2, vbe.ENABLED)
    assert rig.vga.screen.mode() == "vbe 1024x768x32"
    assert mm.read(0x600, 4) == 8 and mm.read(0x604, 4) == 0x1E1E1E1E
    assert mm.read(0x000, 4) == 0                       # no EDID
