"""hvm's xenstore (paravirt.xenstore) as a domU's xenbus sees it: through a ring page in guest
memory, with requests built here from Xen's public header xen/include/public/io/xs_wire.h
(struct xsd_sockmsg, struct xenstore_domain_interface) and nothing of the module's own encoding.

Expected behaviour comes from docs/misc/xenstore.txt and docs/misc/xenstore-ring.txt, and where
they are silent from C xenstored (tools/xenstored/: which error a request gets, when watches
fire); the pre-filled tree from libxl (tools/libs/light/libxl_create.c libxl__domain_make,
libxl_dom.c libxl__build_post).
"""
from __future__ import annotations

import os
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hvm.memory import GuestMemory
from paravirt.xenstore import XenStore, XenStoreError, XenStoreRing

EXAMPLES = int(os.environ.get("HVM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

PAGE = 4096
RING_GPA = 0x3000
UUID = "6a9d2b6e-1f0c-4c1e-9a57-0d5b8f3e2a11"
# xs_wire.h: enum xsd_sockmsg_type
(CONTROL, DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH, TRANSACTION_START, TRANSACTION_END, INTRODUCE,
 RELEASE, GET_DOMAIN_PATH, WRITE, MKDIR, RM, SET_PERMS, WATCH_EVENT, ERROR) = range(17)
RESET_WATCHES, DIRECTORY_PART, GET_FEATURE = 21, 22, 23
# struct xenstore_domain_interface: req[1024], rsp[1024], then u32 req_cons, req_prod, rsp_cons,
# rsp_prod, server_features, connection, error, evtchn_port.
RING = 1024
REQ, RSP = 0, 1024
REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD, SERVER_FEATURES, CONNECTION, ERROR_FIELD = (2048 + 4 * i for i in range(7))
XENSTORE_ERROR_RINGIDX, XENSTORE_ERROR_PROTO = 2, 3
XENSTORE_PAYLOAD_MAX = 4096


class Guest:
    """The domU's end of the ring, as Linux's xenbus_comms.c drives it: bytes into req between
    req_prod and req_cons + 1024, producer index after the data, then the event channel."""

    def __init__(self, memory: GuestMemory, ring: XenStoreRing, base: int = RING_GPA):
        self.mem, self.ring, self.base = memory, ring, base
        self.next_id = 1
        self.inbox = bytearray()

    def u32(self, offset: int) -> int:
        return struct.unpack("<I", self.mem.read(self.base + offset, 4))[0]

    def set_u32(self, offset: int, value: int) -> None:
        self.mem.write(self.base + offset, struct.pack("<I", value & 0xFFFFFFFF))

    def put(self, data: bytes, kick: bool = True) -> None:
        """Write ``data`` into req as room allows, kicking the store when the ring is full."""
        while data:
            cons, prod = self.u32(REQ_CONS), self.u32(REQ_PROD)
            room = RING - ((prod - cons) & 0xFFFFFFFF)
            if room == 0:
                self.ring.kick()
                assert self.u32(REQ_CONS) != cons, "the store took nothing from a full ring"
                continue
            chunk = data[:min(room, RING - prod % RING)]
            self.mem.write(self.base + REQ + prod % RING, chunk)
            self.set_u32(REQ_PROD, prod + len(chunk))
            data = data[len(chunk):]
        if kick:
            self.ring.kick()

    def send(self, op: int, payload: bytes, tx_id: int = 0, kick: bool = True) -> int:
        req_id = self.next_id
        self.next_id += 1
        self.put(struct.pack("<IIII", op, req_id, tx_id, len(payload)) + payload, kick)
        return req_id

    def take(self) -> None:
        """Move everything in rsp to the inbox, telling the store after each read (as xb_read
        does), until it has nothing more to say."""
        while True:
            cons, prod = self.u32(RSP_CONS), self.u32(RSP_PROD)
            count = (prod - cons) & 0xFFFFFFFF
            assert count <= RING
            if not count:
                return
            for i in range(count):
                self.inbox += self.mem.read(self.base + RSP + (cons + i) % RING, 1)
            self.set_u32(RSP_CONS, prod)
            self.ring.kick()

    def messages(self) -> list[tuple[int, int, int, bytes]]:
        """Every complete message received: (type, req_id, tx_id, payload)."""
        self.take()
        out = []
        while len(self.inbox) >= 16:
            op, req_id, tx_id, length = struct.unpack_from("<IIII", self.inbox)
            if len(self.inbox) < 16 + length:
                break
            out.append((op, req_id, tx_id, bytes(self.inbox[16:16 + length])))
            del self.inbox[:16 + length]
        return out

    def call(self, op: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        """One request, its reply (type, payload); watch events received meanwhile are kept."""
        req_id = self.send(op, payload, tx_id)
        replies = []
        self.events = getattr(self, "events", [])
        for message in self.messages():
            if message[0] == WATCH_EVENT:
                self.events.append(message[3])
            else:
                replies.append(message)
        assert len(replies) == 1, replies
        op_out, rid, tid, data = replies[0]
        assert rid == req_id and tid == tx_id
        return op_out, data

    def read(self, path: str, tx_id: int = 0) -> tuple[int, bytes]:
        return self.call(READ, path.encode() + b"\0", tx_id)

    def write(self, path: str, value: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        return self.call(WRITE, path.encode() + b"\0" + value, tx_id)

    def drain_events(self) -> list[bytes]:
        for message in self.messages():
            assert message[0] == WATCH_EVENT, message
            self.events.append(message[3])
        events, self.events = self.events, []
        return events


@pytest.fixture
def rig():
    memory = GuestMemory(4 * PAGE, [(0, 4 * PAGE)])
    store = XenStore(1, memory_kib=262144, name="hvm-guest", vcpus=2, uuid=UUID)
    notified = []
    ring = XenStoreRing(store, memory, RING_GPA, lambda: notified.append(1))
    guest = Guest(memory, ring)
    guest.events = []
    guest.notified = notified
    return store, ring, guest


def ok(reply):
    assert reply == (reply[0], b"OK\0") and reply[0] != ERROR, reply


def error(name: str):
    return ERROR, name.encode() + b"\0"


# -- what a domU finds --------------------------------------------------------------------------


def test_the_domu_tree_as_libxl_makes_it(rig):
    _store, _ring, guest = rig
    assert guest.read("name") == (READ, b"hvm-guest")
    assert guest.read("/local/domain/1/domid") == (READ, b"1")
    assert guest.read("vm") == (READ, f"/vm/{UUID}".encode())
    # Linux's /sys/hypervisor/uuid reads <vm>/uuid (drivers/xen/sys-hypervisor.c)
    assert guest.read(f"/vm/{UUID}/uuid") == (READ, UUID.encode())
    assert guest.read("cpu/0/availability") == (READ, b"online")
    assert guest.read("cpu/1/availability") == (READ, b"online")
    assert guest.read("memory/target") == (READ, b"262144")
    assert guest.read("memory/static-max") == (READ, b"262144")
    assert guest.read("control/platform-feature-xs_reset_watches") == (READ, b"1")
    assert guest.read("control/platform-feature-multiprocessor-suspend") == (READ, b"1")
    assert guest.call(DIRECTORY, b"device\0") == (DIRECTORY, b"")
    control = guest.call(DIRECTORY, b"control\0")[1].split(b"\0")[:-1]
    assert set(control) >= {b"shutdown", b"feature-poweroff", b"feature-reboot", b"feature-suspend", b"sysrq"}
    # libxl: the home and control/ are dom0's, readable by the domU; the nodes it writes are its own
    assert guest.call(GET_PERMS, b"/local/domain/1\0") == (GET_PERMS, b"n0\0r1\0")
    assert guest.call(GET_PERMS, b"control/shutdown\0") == (GET_PERMS, b"n1\0")
    assert guest.call(GET_PERMS, b"data\0") == (GET_PERMS, b"n1\0")


def test_ring_advertises_xenstoreds_features(rig):
    _store, _ring, guest = rig
    # xs_wire.h: ERROR 2 | WATCHDEPTH 4 | DOMID_ANY 8, as C xenstored offers a domain; no reconnect (1)
    assert guest.u32(SERVER_FEATURES) == 2 | 4 | 8
    assert guest.call(GET_FEATURE, b"") == (GET_FEATURE, b"14\0")


def test_get_domain_path(rig):
    _store, _ring, guest = rig
    assert guest.call(GET_DOMAIN_PATH, b"1\0") == (GET_DOMAIN_PATH, b"/local/domain/1\0")
    assert guest.call(GET_DOMAIN_PATH, b"7\0") == (GET_DOMAIN_PATH, b"/local/domain/7\0")
    assert guest.call(GET_DOMAIN_PATH, b"x\0") == error("EINVAL")
    assert guest.call(GET_DOMAIN_PATH, b"70000\0") == error("EINVAL")


# -- the database operations ----------------------------------------------------------------------


def test_read_write_mkdir_rm_directory(rig):
    store, _ring, guest = rig
    ok(guest.write("data/a/b", b"hello"))            # missing parents are made, empty
    assert guest.read("data/a/b") == (READ, b"hello")
    assert guest.read("/local/domain/1/data/a") == (READ, b"")
    ok(guest.write("data/a/c", b"\x00binary\xff"))
    assert guest.read("data/a/c") == (READ, b"\x00binary\xff")
    assert guest.call(DIRECTORY, b"data/a\0") == (DIRECTORY, b"b\0c\0")   # creation order
    ok(guest.call(MKDIR, b"data/a/d\0"))
    ok(guest.call(MKDIR, b"data/a/b\0"))              # exists: left alone
    assert guest.read("data/a/b") == (READ, b"hello")
    ok(guest.call(RM, b"data/a/b\0"))
    assert guest.read("data/a/b") == error("ENOENT")
    ok(guest.call(RM, b"data/a/b\0"))                 # already gone, parent there: fine
    assert guest.call(RM, b"data/x/y\0") == error("ENOENT")    # parent missing too
    ok(guest.call(RM, b"data/a\0"))                   # with its children
    assert guest.call(DIRECTORY, b"data\0") == (DIRECTORY, b"")
    assert store.read("data/a/c") is None
    # what the guest wrote, hvm reads; what hvm writes, the guest reads
    ok(guest.write("data/x", b"1"))
    assert store.read("/local/domain/1/data/x") == "1"
    store.write("data/y", "from hvm")
    assert guest.read("data/y") == (READ, b"from hvm")


def test_errors_are_strings(rig):
    _store, _ring, guest = rig
    assert guest.read("data/nothing") == error("ENOENT")
    assert guest.read("/local/domain") == error("EACCES")          # dom0's, n0
    assert guest.read("/local/domain/0/name") == error("EACCES")   # absent, unreadable parent
    assert guest.write("/local/other", b"x") == error("EACCES")
    assert guest.write("control/new-node", b"x") == error("EACCES")  # control/ is dom0's
    assert guest.write("name", b"renamed") == error("EACCES")       # readable, not writable
    for bad in (b"data//x", b"data/x/", b"data/sp ace", b"", b"@special"):
        assert guest.call(READ, bad + b"\0") == error("EINVAL"), bad
    assert guest.call(READ, b"data/y") == error("EINVAL")            # no NUL
    assert guest.call(READ, b"data\0extra\0") == error("EINVAL")     # more than one argument
    assert guest.call(WRITE, b"data/no-nul") == error("EINVAL")
    assert guest.call(RM, b"/\0") == error("EACCES")
    assert guest.call(99, b"") == error("ENOSYS")                    # unknown type
    assert guest.call(WATCH_EVENT, b"") == error("ENOSYS")           # server-to-client only
    assert guest.call(20, b"") == error("ENOSYS")                    # XS_RESTRICT, removed
    for privileged in (CONTROL, INTRODUCE, RELEASE, 17, 18, 19, 24, 25, 26):
        assert guest.call(privileged, b"1\0") == error("EACCES"), privileged
    assert guest.call(GET_FEATURE, b"0\0") == error("EACCES")


def test_guest_written_feature_flags_and_permissions(rig):
    store, _ring, guest = rig
    # what Linux's manage.c writes at boot, into nodes libxl made the guest's
    ok(guest.write("control/feature-poweroff", b"1"))
    assert store.read("control/feature-poweroff") == "1"
    ok(guest.write("data/mine", b"v"))
    assert guest.call(GET_PERMS, b"data/mine\0") == (GET_PERMS, b"n1\0")   # inherited, owned
    ok(guest.call(SET_PERMS, b"data/mine\0n1\0r0\0"))
    assert guest.call(GET_PERMS, b"data/mine\0") == (GET_PERMS, b"n1\0r0\0")
    assert guest.call(SET_PERMS, b"data/mine\0n0\0") == error("EPERM")     # giving it away
    assert guest.call(SET_PERMS, b"control\0n1\0") == error("EACCES")      # not the owner
    assert guest.call(SET_PERMS, b"data/mine\0x1\0") == error("EINVAL")
    assert guest.call(SET_PERMS, b"data/mine\0") == error("EINVAL")
    assert guest.call(SET_PERMS, b"data/mine\0" + b"n1\0" * 6) == error("ENOSPC")
    ok(guest.call(SET_PERMS, b"data/mine\0n1\0b0x7ff5\0"))                 # hex, as strtol reads it
    assert guest.call(GET_PERMS, b"data/mine\0") == (GET_PERMS, b"n1\0b32757\0")


def test_directory_part(rig):
    _store, _ring, guest = rig
    for name in (b"one", b"two", b"three"):
        ok(guest.write("data/" + name.decode(), b""))
    op, data = guest.call(DIRECTORY_PART, b"data\x000\0")
    gen, rest = data.split(b"\0", 1)
    assert op == DIRECTORY_PART and gen.isdigit()
    assert rest == b"one\0two\0three\0\0"           # the list, then the empty string: done
    assert guest.call(DIRECTORY_PART, b"data\x004\0") == (DIRECTORY_PART, gen + b"\0two\0three\0\0")
    assert guest.call(DIRECTORY_PART, b"data\x0099\0") == (DIRECTORY_PART, gen + b"\0\0")
    assert guest.call(DIRECTORY_PART, b"data\0") == error("EINVAL")


def test_big_directory_is_e2big(rig):
    store, _ring, guest = rig
    for i in range(300):
        store.write(f"data/d/child-with-a-long-name-{i:04d}", "")
    assert guest.call(DIRECTORY, b"data/d\0") == error("E2BIG")
    # DIRECTORY_PART pages through it
    seen, offset = [], 0
    while True:
        _op, data = guest.call(DIRECTORY_PART, b"data/d\0" + str(offset).encode() + b"\0")
        assert len(data) <= XENSTORE_PAYLOAD_MAX
        body = data.split(b"\0", 1)[1]
        if body == b"\0":
            break
        names = body.split(b"\0")
        done = body.endswith(b"\0\0")
        names = [n for n in names if n]
        seen += names
        offset += sum(len(n) + 1 for n in names)
        if done:
            break
    assert len(seen) == 300 and seen[0] == b"child-with-a-long-name-0000"


# -- watches --------------------------------------------------------------------------------------


def test_watch_fires_at_once_then_on_changes(rig):
    store, _ring, guest = rig
    assert guest.call(WATCH, b"control/shutdown\0tok1\0") == (WATCH, b"OK\0")
    # the initial event, relative as the watch was (xenstore.txt WATCH_EVENT)
    assert guest.drain_events() == [b"control/shutdown\0tok1\0"]
    store.write("control/shutdown", "poweroff")      # what machine.stop(graceful=True) does
    assert guest.drain_events() == [b"control/shutdown\0tok1\0"]
    assert guest.read("control/shutdown") == (READ, b"poweroff")
    ok(guest.write("control/shutdown", b""))          # Linux acknowledges by clearing it
    assert guest.drain_events() == [b"control/shutdown\0tok1\0"]
    ok(guest.write("data/elsewhere", b"x"))
    assert guest.drain_events() == []


def test_watch_matches_children_and_depth(rig):
    store, _ring, guest = rig
    ok(guest.call(WATCH, b"/local/domain/1/data\0abs\0"))
    ok(guest.call(WATCH, b"data\0depth1\0" + b"1\0"))
    assert sorted(guest.drain_events()) == [b"/local/domain/1/data\0abs\0", b"data\0depth1\0"]
    ok(guest.write("data/a", b"1"))
    assert sorted(guest.drain_events()) == [b"/local/domain/1/data/a\0abs\0", b"data/a\0depth1\0"]
    ok(guest.write("data/a/b", b"2"))                  # two levels down: not for depth 1
    assert guest.drain_events() == [b"/local/domain/1/data/a/b\0abs\0"]
    store.write("/local/domain/1/data-not-a-child", "x")   # same prefix, not below
    assert guest.drain_events() == []


def test_removing_a_parent_fires_watches_below(rig):
    _store, _ring, guest = rig
    ok(guest.write("data/p/q/r", b"1"))
    ok(guest.call(WATCH, b"data/p/q\0below\0"))
    ok(guest.call(WATCH, b"data\0above\0"))
    guest.drain_events()
    ok(guest.call(RM, b"data/p\0"))
    # each watch once: the one below with its own path, the one above with the removed path
    assert sorted(guest.drain_events()) == [b"data/p\0above\0", b"data/p/q\0below\0"]


def test_unwatch_reset_and_duplicates(rig):
    store, _ring, guest = rig
    ok(guest.call(WATCH, b"data\0t\0"))
    assert guest.call(WATCH, b"data\0t\0") == error("EEXIST")
    assert guest.call(WATCH, b"data\0") == error("EINVAL")
    assert guest.call(WATCH, b"data\0t\0-1\0") == error("EINVAL")
    ok(guest.call(UNWATCH, b"data\0t\0"))
    assert guest.call(UNWATCH, b"data\0t\0") == error("ENOENT")
    guest.drain_events()
    store.write("data/z", "1")
    assert guest.drain_events() == []
    ok(guest.call(WATCH, b"data\0t2\0"))
    ok(guest.call(RESET_WATCHES, b"\0"))
    guest.drain_events()
    store.write("data/z", "2")
    assert guest.drain_events() == []


def test_watch_on_unreadable_node_stays_silent(rig):
    store, _ring, guest = rig
    ok(guest.call(WATCH, b"/local/domain/0\0dom0\0"))
    guest.drain_events()
    store.write("/local/domain/0/name", "Domain-0")    # dom0's, n0: the domU may not know
    assert guest.drain_events() == []


def test_watch_quota(rig):
    _store, _ring, guest = rig
    replies = [guest.call(WATCH, b"data\0t%d\0" % i)[0] for i in range(130)]
    assert replies.count(WATCH) == 128 and replies[-1] == ERROR
    guest.drain_events()


def test_notify_after_replies(rig):
    _store, _ring, guest = rig
    before = len(guest.notified)
    guest.read("name")
    assert len(guest.notified) > before


def test_host_api(rig):
    store, _ring, guest = rig
    seen = []
    store.watch("control", seen.append)
    ok(guest.write("control/feature-poweroff", b"1"))
    store.write("control/shutdown", "poweroff")
    assert seen == ["/local/domain/1/control/feature-poweroff", "/local/domain/1/control/shutdown"]
    store.unwatch(seen.append)
    assert store.read("control/shutdown") == "poweroff"
    assert store.read("/local/domain/1/control/feature-poweroff") == "1"
    assert store.read("control/nothing") is None
    store.mkdir("data/dir")
    assert store.directory("data") == ["dir"]
    store.rm("data/dir")
    store.rm("data/never/was")                     # nothing to do
    assert store.directory("data") == []
    with pytest.raises(XenStoreError):
        store.write("bad//path", "x")


def test_hvm_writes_from_another_thread(rig):
    store, _ring, guest = rig
    ok(guest.call(WATCH, b"data/t\0tok\0"))
    guest.drain_events()
    writer = threading.Thread(target=lambda: [store.write(f"data/t/{i}", "x") for i in range(300)])
    writer.start()
    for i in range(100):
        ok(guest.write(f"data/g{i}", b"y"))
    writer.join()
    events = guest.drain_events()
    assert b"data/t/299\0tok\0" in events
    assert store.directory("data/t") == [str(i) for i in range(300)]


# -- transactions -------------------------------------------------------------------------------


def test_transaction_commit_and_abort(rig):
    store, _ring, guest = rig
    ok(guest.call(WATCH, b"data\0w\0"))
    guest.drain_events()
    op, tx = guest.call(TRANSACTION_START, b"\0")
    assert op == TRANSACTION_START and tx.endswith(b"\0")
    tx_id = int(tx[:-1])
    assert tx_id != 0
    ok(guest.write("data/t", b"in tx", tx_id))
    assert guest.read("data/t", tx_id) == (READ, b"in tx")
    assert guest.read("data/t") == error("ENOENT")     # not outside, yet
    assert store.read("data/t") is None
    assert guest.drain_events() == []                  # watches fire on commit only
    ok(guest.call(TRANSACTION_END, b"T\0", tx_id))
    assert guest.read("data/t") == (READ, b"in tx")
    assert guest.drain_events() == [b"/local/domain/1/data/t\0w\0"[len(b"/local/domain/1/"):]]
    assert guest.call(TRANSACTION_END, b"T\0", tx_id) == error("ENOENT")   # gone

    tx_id = int(guest.call(TRANSACTION_START, b"\0")[1][:-1])
    ok(guest.write("data/t", b"discarded", tx_id))
    ok(guest.call(RM, b"data/t\0", tx_id))
    ok(guest.call(TRANSACTION_END, b"F\0", tx_id))
    assert guest.read("data/t") == (READ, b"in tx")
    assert guest.drain_events() == []


def test_transaction_conflict_is_eagain(rig):
    store, _ring, guest = rig
    tx_id = int(guest.call(TRANSACTION_START, b"\0")[1][:-1])
    assert guest.read("control/shutdown", tx_id) == (READ, b"")
    store.write("control/shutdown", "reboot")          # meanwhile
    ok(guest.write("data/x", b"1", tx_id))
    assert guest.call(TRANSACTION_END, b"T\0", tx_id) == error("EAGAIN")
    assert store.read("data/x") is None
    # a retry sees the new value and commits
    tx_id = int(guest.call(TRANSACTION_START, b"\0")[1][:-1])
    assert guest.read("control/shutdown", tx_id) == (READ, b"reboot")
    ok(guest.write("data/x", b"1", tx_id))
    ok(guest.call(TRANSACTION_END, b"T\0", tx_id))
    assert store.read("data/x") == "1"


def test_transaction_errors(rig):
    _store, _ring, guest = rig
    assert guest.read("name", 12345) == error("ENOENT")              # no such transaction
    tx_id = int(guest.call(TRANSACTION_START, b"\0")[1][:-1])
    assert guest.call(TRANSACTION_START, b"\0", tx_id) == error("EBUSY")   # no nesting
    assert guest.call(TRANSACTION_END, b"X\0", tx_id) == error("EINVAL")
    assert guest.call(TRANSACTION_END, b"T\0") == error("ENOENT")    # tx_id 0
    ok(guest.call(TRANSACTION_END, b"F\0", tx_id))
    started = [guest.call(TRANSACTION_START, b"\0")[0] for _ in range(11)]
    assert started.count(TRANSACTION_START) == 10 and started[-1] == ERROR


# -- the ring -------------------------------------------------------------------------------------


def test_message_split_byte_by_byte(rig):
    _store, _ring, guest = rig
    request = struct.pack("<IIII", READ, 77, 0, 5) + b"name\0"
    for byte in request:
        guest.put(bytes([byte]))
    assert guest.messages() == [(READ, 77, 0, b"hvm-guest")]


def test_message_larger_than_the_ring(rig):
    _store, _ring, guest = rig
    value = bytes(range(256)) * 7                       # 1792 bytes: two ring-fulls with header
    ok(guest.write("data/big", value))
    assert guest.read("data/big") == (READ, value)
    assert guest.write("data/too-big", b"x" * 2100) == error("ENOSPC")   # node-size quota


def test_indices_wrap_around_2_32(rig):
    store, _ring, guest = rig
    for offset in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
        guest.set_u32(offset, 0xFFFFFF00)
    for i in range(40):
        ok(guest.write(f"data/w{i}", b"v" * 20))
    assert guest.u32(REQ_PROD) < 0x1000 and guest.u32(RSP_PROD) < 0x1000
    assert store.read("data/w39") == "v" * 20


def test_full_response_ring_waits_for_the_guest(rig):
    _store, _ring, guest = rig
    value = b"r" * 900
    ok(guest.write("data/v", value))
    ids = [guest.send(READ, b"data/v\0") for _ in range(30)]
    # the store never overruns the guest's consumer index
    assert (guest.u32(RSP_PROD) - guest.u32(RSP_CONS)) & 0xFFFFFFFF == RING
    # and stops reading requests while replies pile up (xenstored's outstanding-request quota)
    assert guest.u32(REQ_CONS) != guest.u32(REQ_PROD)
    replies = []
    while len(replies) < 30:
        batch = guest.messages()
        assert batch or guest.u32(RSP_PROD) != guest.u32(RSP_CONS), "stalled"
        replies += batch
    assert [r[1] for r in replies] == ids
    assert all(r[3] == value for r in replies)


def test_oversized_header_ends_the_connection(rig):
    store, ring, guest = rig
    ok(guest.call(WATCH, b"data\0t\0"))
    guest.drain_events()
    guest.put(struct.pack("<IIII", READ, 1, 0, XENSTORE_PAYLOAD_MAX + 1))
    # xenstore-ring.txt: the connection error indicator says why, and the server stops
    assert guest.u32(ERROR_FIELD) == XENSTORE_ERROR_PROTO
    assert ring.error == XENSTORE_ERROR_PROTO
    guest.put(struct.pack("<IIII", READ, 2, 0, 5) + b"name\0")
    assert guest.messages() == []
    store.write("data/after", "x")                       # its watches are gone too
    assert guest.messages() == []


def test_bad_request_indices_end_the_connection(rig):
    _store, ring, guest = rig
    guest.set_u32(REQ_PROD, guest.u32(REQ_CONS) + RING + 1)
    ring.kick()
    assert guest.u32(ERROR_FIELD) == XENSTORE_ERROR_RINGIDX


def test_bad_response_indices_end_the_connection(rig):
    _store, ring, guest = rig
    guest.set_u32(RSP_CONS, guest.u32(RSP_PROD) + 5)    # the guest consumed what was never sent
    guest.send(READ, b"name\0")
    assert guest.u32(ERROR_FIELD) == XENSTORE_ERROR_RINGIDX
    ring.kick()


def test_unknown_type_with_payload_is_answered_and_the_ring_goes_on(rig):
    _store, _ring, guest = rig
    assert guest.call(0xFFFF, b"junk" * 100) == error("ENOSYS")   # XS_INVALID
    assert guest.read("name") == (READ, b"hvm-guest")


def test_event_queue_is_bounded_and_coalesced(rig):
    store, ring, guest = rig
    ok(guest.call(WATCH, b"data\0t\0"))
    guest.drain_events()
    for i in range(5000):                          # the guest reads nothing meanwhile
        store.write(f"data/n{i}", "x")
    queued = sum(len(data) for data, _ in ring.conn.outbox)
    assert queued <= 64 * 1024 + 4096
    store.write("data/n4999", "y")
    store.write("data/n4999", "z")
    events = guest.drain_events()
    assert len(events) == len(set(events))


# -- fuzzing --------------------------------------------------------------------------------------

INDEX_FIELDS = (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD, CONNECTION, ERROR_FIELD)
u32s = st.one_of(st.integers(0, 2100), st.integers(0, 0xFFFFFFFF),
                 st.sampled_from([0xFFFFFFFF, 0xFFFFFC00, 0x80000000, 1023, 1024, 1025]))
step = st.one_of(
    st.tuples(st.just("bytes"), st.integers(0, 2047), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("index"), st.sampled_from(INDEX_FIELDS), u32s),
    st.tuples(st.just("message"), st.integers(0, 30), st.integers(0, 3),
              st.sampled_from([b"", b"data/a", b"data/a/b", b"name", b"/local", b"@x", b"data\0t",
                               b"data/a\0v", b"data/q\0\0", b"T", b"1"]),
              st.binary(max_size=40)),
    st.tuples(st.just("consume")),
    st.tuples(st.just("host"), st.sampled_from(["data/a", "data/a/b", "control/shutdown", "data"])),
)


@FUZZ
@given(st.lists(step, max_size=60))
def test_fuzz_ring_never_raises_and_respects_the_guest(steps):
    memory = GuestMemory(4 * PAGE, [(0, 4 * PAGE)])
    store = XenStore(1, memory_kib=65536, uuid=UUID)
    ring = XenStoreRing(store, memory, RING_GPA, lambda: None)
    guest = Guest(memory, ring)
    for item in steps:
        kind = item[0]
        if kind == "bytes":
            memory.write(RING_GPA + item[1], item[2][:2048 - item[1]])
        elif kind == "index":
            guest.set_u32(item[1], item[2])
        elif kind == "message":
            _, op, tx_pick, payload, tail = item
            body = payload + b"\0" + tail[:8] if tail else payload + b"\0"
            header = struct.pack("<IIII", op, 1, [0, 1, 2, 0xFFFFFFFF][tx_pick], len(body))
            cons, prod = guest.u32(REQ_CONS), guest.u32(REQ_PROD)
            if (prod - cons) & 0xFFFFFFFF <= RING - len(header + body):
                data = header + body
                for i, byte in enumerate(data):
                    memory.write(RING_GPA + REQ + (prod + i) % RING, bytes([byte]))
                guest.set_u32(REQ_PROD, prod + len(data))
        elif kind == "consume":
            guest.set_u32(RSP_CONS, guest.u32(RSP_PROD))
        else:
            store.write(item[1], "h")
        before = memory.read(RING_GPA, PAGE)
        ring.kick()
        after = memory.read(RING_GPA, PAGE)
        _check_server_writes(before, after)
        # bounded: replies stop being read at the outstanding quota, events are capped
        assert ring.conn.replies <= 21
        assert ring.conn.event_bytes <= 64 * 1024 + 4096
    _check_tree(store)


def _check_server_writes(before: bytes, after: bytes) -> None:
    """The server writes only rsp (in the guest's free space), req_cons, rsp_prod, its feature
    bits and the error field: never req, req_prod, rsp_cons or the connection state."""
    def u32(page, offset):
        return struct.unpack_from("<I", page, offset)[0]
    assert after[REQ:REQ + RING] == before[REQ:REQ + RING]
    for offset in (REQ_PROD, RSP_CONS, CONNECTION):
        assert u32(after, offset) == u32(before, offset)
    assert after[2080:] == before[2080:]
    cons, prod_before, prod_after = u32(before, RSP_CONS), u32(before, RSP_PROD), u32(after, RSP_PROD)
    written = (prod_after - prod_before) & 0xFFFFFFFF
    if written:
        assert (prod_after - cons) & 0xFFFFFFFF <= RING      # within the guest's free space
    changed = {i for i in range(RING) if before[RSP + i] != after[RSP + i]}
    allowed = {(prod_before + i) % RING for i in range(written)}
    assert changed <= allowed


def _check_tree(store: XenStore) -> None:
    """Every node's parent exists and lists it; every listed child exists; owner counts agree."""
    nodes = store.tree.nodes
    for name, node in nodes.items():
        for child in node.children:
            assert (f"/{child}" if name == "/" else f"{name}/{child}") in nodes
        if name != "/":
            cut = name.rfind("/")
            parent = name[:cut] or "/"
            assert name[cut + 1:] in nodes[parent].children
    owners = {}
    for node in nodes.values():
        owners[node.perms[0][0]] = owners.get(node.perms[0][0], 0) + 1
    assert {k: v for k, v in store.tree.owned.items() if v} == owners


request_op = st.sampled_from([READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS, WATCH, UNWATCH,
                              TRANSACTION_START, TRANSACTION_END, DIRECTORY_PART, RESET_WATCHES])
path_part = st.sampled_from(["data", "data/a", "data/a/b", "data/c", "control/shutdown", "control",
                             "/local/domain/1/data/a", "/", "@releaseDomain", "feature/x/y"])


@FUZZ
@given(st.lists(st.tuples(request_op, path_part, st.sampled_from([b"", b"v", b"n1", b"b0", b"T", b"F", b"1"]),
                          st.booleans(), st.booleans()), max_size=50))
def test_fuzz_requests_keep_the_tree_whole(requests):
    memory = GuestMemory(4 * PAGE, [(0, 4 * PAGE)])
    store = XenStore(1, memory_kib=65536, uuid=UUID)
    ring = XenStoreRing(store, memory, RING_GPA, lambda: None)
    guest = Guest(memory, ring)
    guest.events = []
    tx_id = 0
    for op, path, extra, in_tx, host_change in requests:
        payload = path.encode() + b"\0" + (extra + b"\0" if extra else b"")
        reply_op, data = guest.call(op, payload, tx_id if in_tx else 0)
        assert reply_op in (op, ERROR)
        if reply_op == ERROR:
            assert data[:-1].decode() in ("EINVAL", "EACCES", "EEXIST", "ENOENT", "ENOSPC", "EBUSY", "EAGAIN",
                                          "EPERM", "E2BIG") and data.endswith(b"\0")
        elif op == TRANSACTION_START:
            tx_id = int(data[:-1])
        if host_change:
            store.write("data/a", "host")
        _check_tree(store)
        assert ring.error == 0
