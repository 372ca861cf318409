"""hvm's xenstore: the store a Xen domU's xenbus talks to, and the ring page it talks through.

The wire protocol, the message types and the error strings are Xen's public
``xen/include/public/io/xs_wire.h``; what each request does is ``docs/misc/xenstore.txt``; the ring
is ``docs/misc/xenstore-ring.txt``. Where those leave a choice, hvm does what C xenstored does
(``tools/xenstored/core.c``, ``watch.c``, ``transaction.c``, ``domain.c``): which error a refused
request gets, who may read a node, when a watch fires, its quotas.

``XenStore`` holds the tree and answers requests; it does no I/O. ``XenStoreRing`` moves bytes
between a domain's ring page (through a memory object: ``read(gpa, n)``, ``write(gpa, data)``) and
the store, and calls ``notify()`` (the board raises the guest's event channel) after it moved any.
hvm itself reads and writes the store from Python as the control domain would (``read``,
``write``, ``rm``...), and its writes fire the guest's watches like any other change.

The tree is pre-filled with what Xen's toolstack gives a PV domU (libxl's ``libxl__domain_make``
and ``libxl__build_post`` in tools/libs/light/), kept to what the domU reads: its name, domid, vm
path, vCPUs, memory target, ``control/`` and the nodes the guest may write.

Transactions work as xenstored's: a transaction reads and writes its own copies of the nodes it
touches; ``TRANSACTION_END T`` fails with EAGAIN if any of those changed meanwhile (by generation
count), else applies them and fires their watches then.

Not done: special watches (``@introduceDomain``, ``@releaseDomain``: accepted, never fired, as
hvm introduces and releases no domains), quotas beyond the ones a guest could use to grow hvm's
memory, ring reconnection (not advertised), and more than one guest connection.
"""
from __future__ import annotations

import collections
import re
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

from construct import Int32ul, Struct

# -- the wire (io/xs_wire.h) ------------------------------------------------------------------


class Op(IntEnum):
    """enum xsd_sockmsg_type. 20 (XS_RESTRICT) was removed and is invalid."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26


# xsd_errors: the only error names that go on the wire; anything else is sent as EINVAL.
ERRORS = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO", "ENOTEMPTY",
          "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")

# struct xsd_sockmsg, followed by ``len`` payload bytes.
MsgHeader = Struct("type" / Int32ul, "req_id" / Int32ul, "tx_id" / Int32ul, "len" / Int32ul)
HEADER_SIZE = MsgHeader.sizeof()
PAYLOAD_MAX = 4096                    # XENSTORE_PAYLOAD_MAX, both directions
REL_PATH_MAX = 2048                   # XENSTORE_REL_PATH_MAX: past /local/domain/<domid>/

# struct xenstore_domain_interface: req[1024], rsp[1024], then these.
RING_SIZE = 1024
REQ, RSP, INDICES = 0, RING_SIZE, 2 * RING_SIZE
RingIndices = Struct("req_cons" / Int32ul, "req_prod" / Int32ul, "rsp_cons" / Int32ul, "rsp_prod" / Int32ul,
                     "server_features" / Int32ul, "connection" / Int32ul, "error" / Int32ul,
                     "evtchn_port" / Int32ul)
REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD, SERVER_FEATURES, CONNECTION, ERROR = (INDICES + 4 * i for i in range(7))
FEATURE_RECONNECTION, FEATURE_ERROR, FEATURE_WATCHDEPTH, FEATURE_DOMID_ANY = 1, 2, 4, 8
ERROR_NONE, ERROR_COMM, ERROR_RINGIDX, ERROR_PROTO = 0, 1, 2, 3
# What C xenstored offers a domain (domain.c XENSTORE_FEATURES); reconnection is not offered.
FEATURES = FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY
U32 = 0xFFFFFFFF

DOMID_ANY = 0x7FF5                    # xen.h: a permission entry for every domain

# -- limits on what a guest may make hvm keep: xenstored's default quotas (domain.c ``quotas``) -----
NODES_MAX = 1000                      # nodes a domain owns
WATCHES_MAX = 128
OUTSTANDING_MAX = 20                  # replies not yet taken from the ring: no new requests read
TRANSACTIONS_MAX = 10
TRANSACTION_NODES_MAX = 1024          # nodes one transaction touches
PERMS_MAX = 5                         # entries in a node's permission list
NODE_SIZE_MAX = 2048                  # a node's record: header, perms, value, children names
NODE_HEADER_SIZE, PERM_SIZE = 16, 8   # struct node_hdr; struct xs_permissions
EVENT_BYTES_MAX = 64 * 1024           # unsent watch events past this are dropped, as past ACC_MEM

PERM_READ, PERM_WRITE, PERM_OWNER = 1, 2, 4
_PERM_LETTERS = {"n": 0, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}
_LETTER_FOR = {bits: letter for letter, bits in _PERM_LETTERS.items()}
# Node names: ASCII letters and digits and -/_@ (xenstore.txt; core.c valid_chars).
_PATH_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")

# How a change selects watches (watch.h enum watch_match).
SUBTREE, EXACT = "subtree", "exact"


class XenStoreError(Exception):
    """A request refused; ``errno`` is one of ``ERRORS`` (the string the guest gets)."""

    def __init__(self, errno: str):
        super().__init__(errno)
        self.errno = errno if errno in ERRORS else "EINVAL"


def message(op: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """A header and its payload, as either side sends them."""
    return MsgHeader.build(dict(type=op, req_id=req_id, tx_id=tx_id, len=len(payload))) + payload


# -- the tree ---------------------------------------------------------------------------------


class Node:
    """One node as stored: value, permissions (owner first: ``(domid, bits)``), the names of its
    children in creation order (DIRECTORY lists them so), and the generation of its last change.
    Nodes are never changed in place once stored: a change stores a new one, so a transaction's
    copy and the tree's never share state."""

    __slots__ = ("value", "perms", "children", "gen")

    def __init__(self, value: bytes, perms: tuple[tuple[int, int], ...], children: tuple[str, ...] = (),
                 gen: int = 0):
        self.value, self.perms, self.children, self.gen = value, perms, children, gen

    def changed(self, **changes) -> "Node":
        fields = dict(value=self.value, perms=self.perms, children=self.children)
        fields.update(changes)
        return Node(**fields)

    @property
    def owner(self) -> int:
        return self.perms[0][0]

    def size(self) -> int:
        """The record xenstored's node-size quota measures (core.c calc_node_acc_size)."""
        return (NODE_HEADER_SIZE + PERM_SIZE * len(self.perms) + len(self.value)
                + sum(len(c) + 1 for c in self.children))


def parent_of(name: str) -> str:
    """core.c get_parent: "/" for a top-level node (and for "/" and "@..." names)."""
    cut = name.rfind("/", 1)
    return name[:cut] if cut > 0 else "/"


def basename(name: str) -> str:
    return name[name.rfind("/") + 1:]


def child_path(name: str, child: str) -> str:
    return f"/{child}" if name == "/" else f"{name}/{child}"


def is_child(child: str, parent: str, depth: int = -1) -> bool:
    """``child`` is ``parent`` or below it, at most ``depth`` levels down if depth >= 0 (watch.c
    is_child)."""
    if parent == "/":
        if not child.startswith("/"):
            return False
        levels = 0 if child == "/" else child.count("/")
    elif child == parent:
        levels = 0
    elif child.startswith(parent + "/"):
        levels = child.count("/", len(parent))
    else:
        return False
    return depth < 0 or levels <= depth


class _Tree:
    """The committed store: a flat map of absolute path to node, with per-owner node counts."""

    def __init__(self, generation: Callable[[], int]):
        self.nodes: dict[str, Node] = {}
        self.owned: collections.Counter[int] = collections.Counter()
        self._generation = generation

    def get(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def put(self, name: str, node: Node) -> None:
        old = self.nodes.get(name)
        if old is not None:
            self.owned[old.owner] -= 1
        node.gen = self._generation()
        self.nodes[name] = node
        self.owned[node.owner] += 1

    def delete(self, name: str) -> None:
        old = self.nodes.pop(name, None)
        if old is not None:
            self.owned[old.owner] -= 1

    def count_owned(self, domid: int) -> int:
        return self.owned[domid]


@dataclass
class _Event:
    """A change, kept until its watches can fire: at once, or when its transaction commits.
    ``node`` is the node as it was (a removed one) for the permission check."""

    name: str
    match: str
    node: Node | None
    old_perms: tuple | None = None


class Transaction:
    """A transaction's view (transaction.c): the nodes it touched, copied on first touch with the
    generation they had; its changes; the watch events they will fire on commit."""

    def __init__(self, tree: _Tree, tx_id: int, generation: Callable[[], int]):
        self.tree, self.id, self._generation = tree, tx_id, generation
        self.overlay: dict[str, Node | None] = {}
        self.accessed: dict[str, int | None] = {}
        self.owned: collections.Counter[int] = collections.Counter()
        self.events: list[_Event] = []

    def get(self, name: str) -> Node | None:
        if name in self.overlay:
            return self.overlay[name]
        node = self.tree.get(name)
        if name not in self.accessed:
            if len(self.accessed) >= TRANSACTION_NODES_MAX:
                raise XenStoreError("ENOSPC")
            self.accessed[name] = None if node is None else node.gen
        return node

    def put(self, name: str, node: Node) -> None:
        old = self.get(name)
        if old is not None:
            self.owned[old.owner] -= 1
        node.gen = self._generation()
        self.overlay[name] = node
        self.owned[node.owner] += 1

    def delete(self, name: str) -> None:
        old = self.get(name)
        if old is not None:
            self.owned[old.owner] -= 1
        self.overlay[name] = None

    def count_owned(self, domid: int) -> int:
        return self.tree.count_owned(domid) + self.owned[domid]

    def conflicts(self) -> bool:
        """Some node this transaction touched changed (or appeared, or went) since."""
        for name, gen in self.accessed.items():
            node = self.tree.get(name)
            if (None if node is None else node.gen) != gen:
                return True
        return False


@dataclass
class Watch:
    path: str                     # absolute (or "@special")
    token: str
    depth: int = -1
    prefix: int = 0               # characters cut from event paths: a relative watch's base + "/"


@dataclass
class Connection:
    """One client of the store: a guest's ring (``XenStoreRing``) or a test. What the store sends
    it queues in ``outbox`` as whole messages; the transport takes bytes from the head
    (``sent`` of them already) and calls ``taken()``."""

    domid: int
    watches: list[Watch] = field(default_factory=list)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    next_tx: int = 1
    outbox: collections.deque = field(default_factory=collections.deque)   # (bytes, is_event)
    sent: int = 0
    replies: int = 0              # replies in the outbox (xenstored's "outstanding requests")
    event_bytes: int = 0
    on_output: Callable[[], None] | None = None
    dirty: bool = False

    def queue_reply(self, data: bytes) -> None:
        self.outbox.append((data, False))
        self.replies += 1
        self.dirty = True

    def queue_event(self, path: str, token: str) -> None:
        payload = path.encode("latin-1") + b"\0" + token.encode("latin-1") + b"\0"
        if len(payload) > PAYLOAD_MAX:
            return                          # core.c send_event: over-long events are not sent
        data = message(Op.WATCH_EVENT, 0, 0, payload)
        if self.event_bytes + len(data) > EVENT_BYTES_MAX:
            return
        # An identical event not yet started is not queued twice (core.c send_event).
        for index, (queued, is_event) in enumerate(self.outbox):
            if is_event and queued == data and not (index == 0 and self.sent):
                return
        self.outbox.append((data, True))
        self.event_bytes += len(data)
        self.dirty = True

    def pending(self) -> bytes:
        """The unsent rest of the head message (b"" when nothing is queued)."""
        return self.outbox[0][0][self.sent:] if self.outbox else b""

    def taken(self, count: int) -> None:
        """``count`` bytes of the head message went out."""
        self.sent += count
        data, is_event = self.outbox[0]
        if self.sent >= len(data):
            self.outbox.popleft()
            self.sent = 0
            if is_event:
                self.event_bytes -= len(data)
            else:
                self.replies -= 1

    def reset(self) -> None:
        self.watches.clear()
        self.transactions.clear()
        self.outbox.clear()
        self.sent = self.replies = self.event_bytes = 0


class XenStore:
    """The store for one domU, ``domid``, whose home is /local/domain/<domid>. hvm's own calls
    (``read``, ``write``...) act as the control domain: no permission checks, no quotas; a path
    xenstore would refuse raises XenStoreError. Every method may be called from any thread."""

    def __init__(self, domid: int = 1, *, memory_kib: int, name: str = "hvm-guest", vcpus: int = 1,
                 uuid: str | None = None):
        self.domid = domid
        self.home = f"/local/domain/{domid}"
        self.lock = threading.RLock()
        self._gen = 0
        self.tree = _Tree(self._next_generation)
        self.connections: list[Connection] = []
        self._host_watches: list[tuple[str, Callable[[str], None]]] = []
        self.uuid = uuid or str(uuidlib.uuid4())
        self._populate(name, memory_kib, vcpus)

    def _next_generation(self) -> int:
        self._gen += 1
        return self._gen

    # -- the domU's tree ----------------------------------------------------------------------------
    def _populate(self, name: str, memory_kib: int, vcpus: int) -> None:
        """What libxl writes for a PV domU, and with its permissions: ``roperm`` (dom0's,
        readable by the domU) for the domain's directories, ``rwperm`` (the domU's own) for
        the nodes the guest writes; children inherit their parent's."""
        dom0_only = ((0, 0),)
        readable = ((0, 0), (self.domid, PERM_READ))
        own = ((self.domid, 0),)
        home, vm = self.home, f"/vm/{self.uuid}"
        self.tree.put("/", Node(b"", dom0_only))
        for path in ("/tool", "/tool/xenstored", "/local", "/local/domain", "/vm"):
            self._host_make(path, dom0_only)
        for path in (home, vm, f"{home}/cpu", f"{home}/memory", f"{home}/device", f"{home}/control"):
            self._host_make(path, readable)
        for leaf in ("shutdown", "feature-poweroff", "feature-reboot", "feature-suspend", "sysrq"):
            self._host_make(f"{home}/control/{leaf}", own)
        for path in ("data", "drivers", "feature", "attr", "error"):
            self._host_make(f"{home}/{path}", own)
        values = {
            f"{vm}/uuid": self.uuid, f"{vm}/name": name,
            f"{home}/vm": vm, f"{home}/name": name, f"{home}/domid": str(self.domid),
            f"{home}/memory/static-max": str(memory_kib), f"{home}/memory/target": str(memory_kib),
            f"{home}/control/platform-feature-multiprocessor-suspend": "1",
            f"{home}/control/platform-feature-xs_reset_watches": "1",
        }
        values.update({f"{home}/cpu/{n}/availability": "online" for n in range(vcpus)})
        for path, value in values.items():
            self.write(path, value)

    def _host_make(self, path: str, perms: tuple) -> None:
        self._apply(_Call(self, None, self.tree), Op.MKDIR, path.encode() + b"\0")
        self.tree.put(path, self.tree.get(path).changed(perms=perms))

    # -- hvm's side ---------------------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        """The value at ``path`` (relative to the domain's home unless absolute), or None."""
        with self.lock:
            node = self.tree.get(self._canonical(path, None))
            return None if node is None else node.value.decode("latin-1")

    def directory(self, path: str) -> list[str] | None:
        with self.lock:
            node = self.tree.get(self._canonical(path, None))
            return None if node is None else list(node.children)

    def write(self, path: str, value: str | bytes) -> None:
        """Write as the control domain: missing parents are made, watches fire. A str value
        is stored as latin-1 (xenstore values are ASCII by convention), as ``read`` returns it."""
        data = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        self._host_request(Op.WRITE, path.encode("latin-1") + b"\0" + data)

    def mkdir(self, path: str) -> None:
        self._host_request(Op.MKDIR, path.encode("latin-1") + b"\0")

    def rm(self, path: str) -> None:
        """Remove ``path`` and everything below it (nothing if it does not exist)."""
        try:
            self._host_request(Op.RM, path.encode("latin-1") + b"\0")
        except XenStoreError as exc:
            if exc.errno != "ENOENT":
                raise

    def watch(self, path: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(changed_path)`` (absolute) on every change at or below ``path``. It
        runs with the store's lock held, on the thread that made the change."""
        with self.lock:
            self._host_watches.append((self._canonical(path, None), callback))

    def unwatch(self, callback: Callable[[str], None]) -> None:
        with self.lock:
            self._host_watches = [(p, c) for p, c in self._host_watches if c is not callback]

    def _host_request(self, op: Op, payload: bytes) -> None:
        with self.lock:
            self._apply(_Call(self, None, self.tree), op, payload)
        self._wake()

    def _wake(self) -> None:
        """Tell each connection that got output from hvm's change (outside the lock: the ring
        takes it again, and the board's notify must not run under it)."""
        with self.lock:
            woken = [c for c in self.connections if c.dirty and c.on_output is not None]
            for conn in woken:
                conn.dirty = False
        for conn in woken:
            conn.on_output()

    # -- connections and requests ------------------------------------------------------------------
    def connect(self, domid: int | None = None, on_output: Callable[[], None] | None = None) -> Connection:
        with self.lock:
            conn = Connection(self.domid if domid is None else domid, on_output=on_output)
            self.connections.append(conn)
            return conn

    def disconnect(self, conn: Connection) -> None:
        with self.lock:
            conn.reset()
            if conn in self.connections:
                self.connections.remove(conn)

    def request(self, conn: Connection, op: int, req_id: int, tx_id: int, payload: bytes) -> None:
        """Answer one request from ``conn`` (core.c process_message): the reply, and any watch
        events, go to the connections' outboxes."""
        with self.lock:
            try:
                reply = self._dispatch(conn, op, tx_id, payload)
            except XenStoreError as exc:
                conn.queue_reply(message(Op.ERROR, req_id, tx_id, exc.errno.encode() + b"\0"))
                return
            kind, data, after = reply
            if len(data) > PAYLOAD_MAX:
                conn.queue_reply(message(Op.ERROR, req_id, tx_id, b"E2BIG\0"))
                return
            conn.queue_reply(message(kind, req_id, tx_id, data))
            if after is not None:
                after()

    def _dispatch(self, conn: Connection, op: int, tx_id: int, payload: bytes):
        if op not in _GUEST_OPS and op not in _PRIVILEGED_OPS:
            raise XenStoreError("ENOSYS")
        if op in _PRIVILEGED_OPS:
            raise XenStoreError("EACCES")        # the domU is not the control domain
        view = self.tree
        transaction = None
        if op not in (Op.WATCH, Op.UNWATCH) and tx_id:
            transaction = conn.transactions.get(tx_id)
            if transaction is None:
                raise XenStoreError("ENOENT")
            view = transaction
        call = _Call(self, conn, view, transaction)
        if op == Op.WATCH:
            return self._watch(conn, payload)
        if op == Op.UNWATCH:
            return self._unwatch(conn, payload)
        if op == Op.TRANSACTION_START:
            return self._transaction_start(conn, transaction)
        if op == Op.TRANSACTION_END:
            return self._transaction_end(conn, transaction, payload)
        if op == Op.RESET_WATCHES:
            conn.watches.clear()
            conn.transactions.clear()
            return Op.RESET_WATCHES, b"OK\0", None
        if op == Op.GET_DOMAIN_PATH:
            domid = _parse_domid(_one_arg(payload))
            return op, f"/local/domain/{domid}".encode() + b"\0", None
        if op == Op.GET_FEATURE:
            if _strings(payload):
                raise XenStoreError("EACCES")    # another domain's features: dom0 only
            return op, str(FEATURES).encode() + b"\0", None
        return op, self._apply(call, op, payload), None

    # -- the operations on the tree ----------------------------------------------------------------
    def _apply(self, call: "_Call", op: int, payload: bytes) -> bytes:
        if op == Op.READ:
            return call.get(_one_arg(payload), PERM_READ)[1].value
        if op == Op.DIRECTORY:
            node = call.get(_one_arg(payload), PERM_READ)[1]
            return b"".join(c.encode("latin-1") + b"\0" for c in node.children)
        if op == Op.DIRECTORY_PART:
            return self._directory_part(call, payload)
        if op == Op.GET_PERMS:
            node = call.get(_one_arg(payload), PERM_READ, special=True)[1]
            return b"".join(f"{_LETTER_FOR[bits]}{domid}".encode() + b"\0" for domid, bits in node.perms)
        if op == Op.WRITE:
            cut = payload.find(b"\0")
            if cut < 0:
                raise XenStoreError("EINVAL")
            name, node = call.lookup(payload[:cut], PERM_WRITE)
            value = payload[cut + 1:]
            if node is None:
                node = call.create(name, value)
            else:
                node = node.changed(value=value)
                call.check_size(node)
                call.store_node(name, node)
            call.fire(name, SUBTREE, node)
            return b"OK\0"
        if op == Op.MKDIR:
            name, node = call.lookup(_one_arg(payload), PERM_WRITE)
            if node is None:
                call.fire(name, SUBTREE, call.create(name, b""))
            return b"OK\0"
        if op == Op.RM:
            return self._rm(call, payload)
        if op == Op.SET_PERMS:
            return self._set_perms(call, payload)
        raise XenStoreError("ENOSYS")

    def _rm(self, call: "_Call", payload: bytes) -> bytes:
        name, node = call.lookup(_one_arg(payload), PERM_WRITE)
        if node is None:
            # Removing what is not there is fine while its parent is (xenstore.txt RM).
            if call.view.get(parent_of(name)) is None:
                raise XenStoreError("ENOENT")
            return b"OK\0"
        if name == "/":
            raise XenStoreError("EINVAL")
        # Children before parents, each watch firing once (core.c delnode_sub): the removed
        # node's own watchers and those above it see its path, watchers below see theirs.
        order: list[tuple[str, Node]] = []
        stack = [(name, node, False)]
        while stack:
            path, here, expanded = stack.pop()
            if expanded:
                order.append((path, here))
                continue
            stack.append((path, here, True))
            for child in reversed(here.children):
                below = call.view.get(child_path(path, child))
                if below is not None:
                    stack.append((child_path(path, child), below, False))
        for path, gone in order:
            call.fire(path, SUBTREE if path == name else EXACT, gone)
            call.view.delete(path)
        parent = call.view.get(parent_of(name))
        call.view.put(parent_of(name), parent.changed(children=tuple(c for c in parent.children
                                                                 if c != basename(name))))
        return b"OK\0"

    def _set_perms(self, call: "_Call", payload: bytes) -> bytes:
        strings = _strings(payload)
        if len(strings) < 2:
            raise XenStoreError("EINVAL")
        if len(strings) - 1 > PERMS_MAX and call.conn is not None:
            raise XenStoreError("ENOSPC")
        perms = tuple(_parse_perm(s) for s in strings[1:])
        name, node = call.lookup(strings[0], PERM_WRITE | PERM_OWNER, special=True)
        if node is None:
            raise XenStoreError("ENOENT")
        if call.conn is not None and perms[0][0] != node.owner:
            raise XenStoreError("EPERM")         # only dom0 gives a node away
        changed = node.changed(perms=perms)
        call.check_size(changed)
        call.store_node(name, changed)
        call.fire(name, SUBTREE, changed, old_perms=node.perms)
        return b"OK\0"

    def _directory_part(self, call: "_Call", payload: bytes) -> bytes:
        """core.c send_directory_part: the generation, then children from a byte offset into
        the NUL-separated list, whole names only, an extra NUL once the list is done."""
        if payload.count(b"\0") != 2:
            raise XenStoreError("EINVAL")
        path, offset_text = payload.split(b"\0")[:2]
        node = call.get(path, PERM_READ)[1]
        offset = _atoi(offset_text)
        gen = str(node.gen).encode() + b"\0"
        children = b"".join(c.encode("latin-1") + b"\0" for c in node.children)
        if offset >= len(children) or offset < 0:
            return gen + b"\0"
        limit = PAYLOAD_MAX - len(gen) - 1
        end = offset
        while end < len(children):
            nul = children.find(b"\0", end)
            if (end - offset) + (nul - end) >= limit:
                break
            end = nul + 1
        return gen + children[offset:end] + (b"\0" if end == len(children) else b"")

    # -- watches ------------------------------------------------------------------------------------
    def _watch(self, conn: Connection, payload: bytes):
        strings = _strings(payload)
        depth = -1
        if len(strings) == 3:
            depth = _atoi(strings[2])
            if depth < 0:
                raise XenStoreError("EINVAL")
        elif len(strings) != 2:
            raise XenStoreError("EINVAL")
        path, relative = self._canonical_watch(strings[0], conn)
        token = strings[1].decode("latin-1")
        if any(w.path == path and w.token == token for w in conn.watches):
            raise XenStoreError("EEXIST")
        if len(conn.watches) >= WATCHES_MAX:
            raise XenStoreError("ENOSPC")
        watch = Watch(path, token, depth, len(self.home) + 1 if relative else 0)
        conn.watches.append(watch)
        # The reply first, then the event every new watch fires (watch.c do_watch).
        return Op.WATCH, b"OK\0", lambda: conn.queue_event(path[watch.prefix:], token)

    def _unwatch(self, conn: Connection, payload: bytes):
        strings = _strings(payload)
        if len(strings) != 2:
            raise XenStoreError("EINVAL")
        path, _relative = self._canonical_watch(strings[0], conn)
        token = strings[1].decode("latin-1")
        for watch in conn.watches:
            if watch.path == path and watch.token == token:
                conn.watches.remove(watch)
                return Op.UNWATCH, b"OK\0", None
        raise XenStoreError("ENOENT")

    def _canonical_watch(self, raw: bytes, conn: Connection) -> tuple[str, bool]:
        relative = not raw.startswith((b"/", b"@"))
        return self._canonical(raw, conn, special=True), relative

    def fire(self, event: _Event) -> None:
        """Queue the watch events ``event`` triggers (watch.c fire_watches)."""
        name = event.name
        for conn in self.connections:
            if not self._watch_permitted(conn, event):
                continue
            for watch in conn.watches:
                if event.match == EXACT:
                    hit = name == watch.path
                else:
                    hit = is_child(name, watch.path, watch.depth)
                if hit:
                    conn.queue_event(name[watch.prefix:], watch.token)
        for path, callback in list(self._host_watches):
            if (name == path) if event.match == EXACT else is_child(name, path):
                callback(name)

    def _watch_permitted(self, conn: Connection, event: _Event) -> bool:
        """A watcher hears of a change to a node it may read, or whose parent it may read, under
        the node's old permissions or its new ones (watch.c watch_permitted)."""
        if event.old_perms is not None and _perm_for(conn.domid, event.old_perms) & PERM_READ:
            return True
        node = event.node if event.node is not None else self.tree.get(event.name)
        if node is None:
            return False
        if _perm_for(conn.domid, node.perms) & PERM_READ:
            return True
        parent = self.tree.get(parent_of(event.name))
        return parent is not None and bool(_perm_for(conn.domid, parent.perms) & PERM_READ)

    # -- transactions --------------------------------------------------------------------------------
    def _transaction_start(self, conn: Connection, current: Transaction | None):
        if current is not None:
            raise XenStoreError("EBUSY")          # no nesting
        if len(conn.transactions) >= TRANSACTIONS_MAX:
            raise XenStoreError("ENOSPC")
        while conn.next_tx == 0 or conn.next_tx in conn.transactions:
            conn.next_tx = (conn.next_tx + 1) & U32
        tx_id = conn.next_tx
        conn.next_tx = (conn.next_tx + 1) & U32
        conn.transactions[tx_id] = Transaction(self.tree, tx_id, self._next_generation)
        return Op.TRANSACTION_START, str(tx_id).encode() + b"\0", None

    def _transaction_end(self, conn: Connection, transaction: Transaction | None, payload: bytes):
        arg = _one_arg(payload)
        if arg not in (b"T", b"F"):
            raise XenStoreError("EINVAL")
        if transaction is None:
            raise XenStoreError("ENOENT")
        del conn.transactions[transaction.id]     # gone whatever the outcome
        if arg == b"T":
            if transaction.conflicts():
                raise XenStoreError("EAGAIN")
            for name, node in transaction.overlay.items():
                if node is None:
                    self.tree.delete(name)
                else:
                    self.tree.put(name, node)
            for event in transaction.events:
                self.fire(event)
        return Op.TRANSACTION_END, b"OK\0", None

    # -- paths --------------------------------------------------------------------------------------
    def _canonical(self, raw: bytes | str, conn: Connection | None, special: bool = False) -> str:
        """core.c canonicalize: valid characters only, relative to the domain's home, no
        trailing or doubled slash, "@special" names only where allowed, bounded length."""
        path = raw if isinstance(raw, str) else raw.decode("latin-1")
        if not path or not _PATH_CHARS.issuperset(path) or (path[0] == "@" and not special):
            raise XenStoreError("EINVAL")
        if path[0] not in "/@":
            path = f"{self.home}/{path}"
        if (path.endswith("/") and path != "/") or "//" in path:
            raise XenStoreError("EINVAL")
        local = _local_offset(path)
        if conn is not None and len(path) - local > REL_PATH_MAX:
            raise XenStoreError("EINVAL")
        return path


_GUEST_OPS = frozenset({Op.DIRECTORY, Op.READ, Op.GET_PERMS, Op.WATCH, Op.UNWATCH, Op.TRANSACTION_START,
                        Op.TRANSACTION_END, Op.GET_DOMAIN_PATH, Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS,
                        Op.RESET_WATCHES, Op.DIRECTORY_PART, Op.GET_FEATURE})
# core.c wire_funcs' XS_FLAG_PRIV: refused with EACCES to an unprivileged domain.
_PRIVILEGED_OPS = frozenset({Op.CONTROL, Op.INTRODUCE, Op.RELEASE, Op.IS_DOMAIN_INTRODUCED, Op.RESUME,
                             Op.SET_TARGET, Op.SET_FEATURE, Op.GET_QUOTA, Op.SET_QUOTA})


class _Call:
    """One request's context: who asks (None: hvm, as the control domain), the view it works on
    (the tree, or a transaction), and where its watch events go."""

    def __init__(self, store: XenStore, conn: Connection | None, view, transaction: Transaction | None = None):
        self.store, self.conn, self.view, self.transaction = store, conn, view, transaction
        self.domid = None if conn is None else conn.domid

    def perm(self, node: Node) -> int:
        return _perm_for(self.domid, node.perms)

    def lookup(self, raw: bytes | str, perm: int, special: bool = False) -> tuple[str, Node | None]:
        """The canonical name and its node (None if it does not exist), or the error a request
        needing ``perm`` gets; a missing node is EACCES, not ENOENT, unless the nearest existing
        ancestor grants ``perm`` (core.c get_node_chk_perm / errno_from_parents)."""
        name = self.store._canonical(raw, self.conn, special)
        node = self.view.get(name)
        if node is not None and self.perm(node) & perm == perm:
            return name, node
        error = "ENOENT" if node is None else "EACCES"
        ancestor = name
        while True:
            ancestor = parent_of(ancestor)
            above = self.view.get(ancestor)
            if above is not None or ancestor == "/":
                break
        if above is None or not self.perm(above) & perm:
            error = "EACCES"
        if error == "ENOENT":
            return name, None
        raise XenStoreError(error)

    def get(self, raw: bytes | str, perm: int, special: bool = False) -> tuple[str, Node]:
        name, node = self.lookup(raw, perm, special)
        if node is None:
            raise XenStoreError("ENOENT")
        return name, node

    def check_size(self, node: Node) -> None:
        if self.conn is not None and node.size() >= NODE_SIZE_MAX:
            raise XenStoreError("ENOSPC")

    def store_node(self, name: str, node: Node) -> None:
        self.view.put(name, node)

    def create(self, name: str, value: bytes) -> Node:
        """Make ``name`` and its missing parents (core.c construct_node): each inherits its
        parent's permissions, a domU owning what it makes. Every check comes first, so a refused
        request changes nothing."""
        missing = [name]
        parent_name = parent_of(name)
        while self.view.get(parent_name) is None:
            missing.append(parent_name)
            parent_name = parent_of(parent_name)
        parent = self.view.get(parent_name)
        made: list[tuple[str, Node]] = []
        for path in reversed(missing):
            parent = parent.changed(children=parent.children + (basename(path),))
            made.append((parent_name, parent))
            perms = parent.perms if self.conn is None else ((self.domid, parent.perms[0][1]),) + parent.perms[1:]
            parent_name, parent = path, Node(value if path == name else b"", perms)
        made.append((parent_name, parent))
        if self.conn is not None:
            for _path, node in made:
                self.check_size(node)
            if self.view.count_owned(self.domid) + len(missing) > NODES_MAX:
                raise XenStoreError("ENOSPC")
        for path, node in made:
            self.view.put(path, node)
        return parent

    def fire(self, name: str, match: str, node: Node | None, old_perms: tuple | None = None) -> None:
        event = _Event(name, match, node, old_perms)
        if self.transaction is not None:
            self.transaction.events.append(event)   # fired on commit
        else:
            self.store.fire(event)


# -- small parsers, as xenstored's C does them ------------------------------------------------------


def _strings(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings of a payload; bytes after the last NUL are ignored (core.c
    get_strings)."""
    return payload.split(b"\0")[:-1]


def _one_arg(payload: bytes) -> bytes:
    """core.c onearg: exactly one string, its NUL the payload's last byte."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XenStoreError("EINVAL")
    return payload[:-1]


def _atoi(text: bytes) -> int:
    """C atoi: optional blanks and sign, then digits; 0 when there are none."""
    text = text.lstrip(b" \t\n\v\f\r")
    sign = -1 if text[:1] == b"-" else 1
    if text[:1] in (b"-", b"+"):
        text = text[1:]
    digits = len(text) - len(text.lstrip(b"0123456789"))
    return sign * int(text[:digits]) if digits else 0


def _parse_domid(text: bytes) -> int:
    """domain.c parse_domid: decimal to the end, at most 65535."""
    if text and not text.isdigit():
        raise XenStoreError("EINVAL")
    domid = int(text) if text else 0
    if domid > 65535:
        raise XenStoreError("EINVAL")
    return domid


def _parse_perm(text: bytes) -> tuple[int, int]:
    """One "<n|r|w|b><domid>" (xenstore_strings_to_perms: the domid as strtol base 0 reads it,
    which hvm also holds to a domid's range)."""
    letter, number = text[:1].decode("latin-1"), text[1:].decode("latin-1")
    match = _STRTOL.fullmatch(number)
    if letter not in _PERM_LETTERS or match is None:
        raise XenStoreError("EINVAL")
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        domid = int(digits, 16)
    else:
        domid = int(digits, 8) if digits.startswith("0") else int(digits)
    domid = -domid if sign == "-" else domid
    if not 0 <= domid <= 0xFFFF:
        raise XenStoreError("EINVAL")
    return domid, _PERM_LETTERS[letter]


def _perm_for(domid: int | None, perms: tuple) -> int:
    """core.c perm_for_conn: dom0 and the owner may do anything; else the first entry naming
    the domain (or DOMID_ANY), else the owner entry's bits, which apply to everyone else."""
    if domid is None or perms[0][0] in (domid, DOMID_ANY):
        return PERM_READ | PERM_WRITE | PERM_OWNER
    for who, bits in perms[1:]:
        if who in (domid, DOMID_ANY):
            return bits
    return perms[0][1]


def _local_offset(path: str) -> int:
    """Characters of a "/local/domain/<domid>/" prefix, which the path-length quota skips."""
    prefix = "/local/domain/"
    if not path.startswith(prefix):
        return 0
    rest = path[len(prefix):]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if not 0 < digits <= 5 or rest[digits:digits + 1] != "/":
        return 0
    return len(prefix) + digits + 1


# -- the ring ------------------------------------------------------------------------------------


class XenStoreRing:
    """A domain's xenstore ring page at guest-physical ``gpa``, served by ``store``.

    ``kick()`` when the guest notifies the store's event channel; ``notify()`` is called after
    the ring moved (requests consumed, replies or events produced). Everything the guest writes
    is untrusted: indices are free-running u32 and only their distance is believed, and only if
    it is at most a ring (domain.c check_indexes); a header promising more than PAYLOAD_MAX, or
    indices out of bounds, end the connection as xenstored does (the error field set, watches and
    transactions dropped, the ring served no more: ``error``)."""

    LOOPS = 1024                 # passes over the ring per kick: ample, and a bound

    def __init__(self, store: XenStore, memory, gpa: int, notify: Callable[[], None]):
        self.store, self.memory, self.base, self.notify = store, memory, gpa, notify
        self.error = ERROR_NONE
        self._partial = bytearray()
        self._header = None
        self.conn = store.connect(on_output=self._push)
        memory.write(gpa + SERVER_FEATURES, Int32ul.build(FEATURES))

    def kick(self) -> None:
        with self.store.lock:
            moved = self._service() if self.error == ERROR_NONE else False
        if moved:
            self.notify()

    def _push(self) -> None:
        """hvm's own change queued events: write them out."""
        self.kick()

    def indices(self):
        return RingIndices.parse(self.memory.read(self.base + INDICES, RingIndices.sizeof()))

    def _service(self) -> bool:
        moved = False
        for _ in range(self.LOOPS):
            progress = self._flush()
            if self.error == ERROR_NONE and self.conn.replies < OUTSTANDING_MAX:
                progress |= self._consume()
            moved |= progress
            if not progress or self.error != ERROR_NONE:
                break
        self.conn.dirty = False
        return moved

    def _flush(self) -> bool:
        """Write queued output into rsp, as far as the guest has room (domain.c writechn)."""
        wrote = False
        while True:
            data = self.conn.pending()
            if not data:
                return wrote
            index = self.indices()
            cons, prod = index.rsp_cons, index.rsp_prod
            used = (prod - cons) & U32
            if used > RING_SIZE:
                self._fail(ERROR_RINGIDX)
                return wrote
            count = min(RING_SIZE - used, len(data))
            if not count:
                return wrote
            self._ring_write(RSP, prod, data[:count])
            self.memory.write(self.base + RSP_PROD, Int32ul.build((prod + count) & U32))
            self.conn.taken(count)
            wrote = True

    def _consume(self) -> bool:
        """Take request bytes from req, a header then its payload at a time, and answer every
        message completed (core.c handle_input, domain.c readchn)."""
        index = self.indices()
        cons, prod = index.req_cons, index.req_prod
        avail = (prod - cons) & U32
        if avail > RING_SIZE:
            self._fail(ERROR_RINGIDX)
            return False
        if not avail:
            return False
        wanted = (HEADER_SIZE if self._header is None else self._header.len) - len(self._partial)
        count = min(avail, wanted)
        self._partial += self._ring_read(REQ, cons, count)
        self.memory.write(self.base + REQ_CONS, Int32ul.build((cons + count) & U32))
        if self._header is None and len(self._partial) == HEADER_SIZE:
            self._header = MsgHeader.parse(bytes(self._partial))
            self._partial.clear()
            if self._header.len > PAYLOAD_MAX:
                self._fail(ERROR_PROTO)
                return True
        if self._header is not None and len(self._partial) == self._header.len:
            header, payload = self._header, bytes(self._partial)
            self._header = None
            self._partial.clear()
            self.store.request(self.conn, header.type, header.req_id, header.tx_id, payload)
        return True

    def _ring_read(self, area: int, index: int, count: int) -> bytes:
        start = index & (RING_SIZE - 1)
        first = min(count, RING_SIZE - start)
        data = self.memory.read(self.base + area + start, first)
        return data + self.memory.read(self.base + area, count - first) if count > first else data

    def _ring_write(self, area: int, index: int, data: bytes) -> None:
        start = index & (RING_SIZE - 1)
        first = min(len(data), RING_SIZE - start)
        self.memory.write(self.base + area + start, data[:first])
        if len(data) > first:
            self.memory.write(self.base + area, data[first:])

    def _fail(self, code: int) -> None:
        """domain.c ignore_connection: say why in the error field, forget the connection's
        watches, transactions and buffers, and serve the ring no more."""
        self.error = code
        self.memory.write(self.base + ERROR, Int32ul.build(code))
        self._partial.clear()
        self._header = None
        self.store.disconnect(self.conn)


__all__ = ["XenStore", "XenStoreRing", "XenStoreError", "Op", "ERRORS", "MsgHeader", "RingIndices",
           "message", "FEATURES", "PAYLOAD_MAX", "RING_SIZE"]
