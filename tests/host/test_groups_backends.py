"""Group members on different backends interoperate: a host on libsodium and
a board on pure Python read each other's publications and re-keys."""
import os

from shared_protocol.crypto import api
from shared_protocol.crypto.pure import PureBackend
from shared_protocol.groups.admin import Admin
from shared_protocol.groups.invite import member_from_invite
from upsycle.crypto_nacl import NaclBackend


def with_backend(backend, fn, *args):
    old = api.use_backend(backend)
    try:
        return fn(*args)
    finally:
        api.use_backend(old)


def test_pure_and_nacl_members_interoperate():
    nacl, pure = NaclBackend(), PureBackend()
    admin = with_backend(nacl, Admin, os.urandom(32), os.urandom(32))
    host = with_backend(nacl, member_from_invite, with_backend(nacl, admin.invite, os.urandom(32), True, True))
    board = with_backend(pure, member_from_invite, with_backend(nacl, admin.invite, os.urandom(32), False, True))
    gone = with_backend(nacl, member_from_invite, with_backend(nacl, admin.invite, os.urandom(32), True, False))
    m = with_backend(pure, board.seal, b"21.5C", os.urandom(32))
    assert with_backend(nacl, host.open, m, 0).body == b"21.5C"
    rk, = with_backend(nacl, admin.remove, gone.identity.public, os.urandom(32), os.urandom(32))
    assert with_backend(pure, board.open, rk, 0).epoch == 1
    assert with_backend(nacl, host.open, rk, 0).epoch == 1
    m = with_backend(pure, board.seal, b"after", os.urandom(32))
    assert with_backend(nacl, host.open, m, 0).body == b"after"
    m = with_backend(nacl, host.seal, b"from host", os.urandom(32))
    assert with_backend(pure, admin.open, m, 0).body == b"from host"


def test_signed_readings_interoperate_across_backends():
    # group_rs uses the ChaCha20 stream without the Poly1305 tag: the pure
    # backend computes it directly, libsodium as the AEAD's ciphertext part
    nacl, pure = NaclBackend(), PureBackend()
    admin = with_backend(nacl, Admin, os.urandom(32), os.urandom(32))
    host = with_backend(nacl, member_from_invite, with_backend(nacl, admin.invite, os.urandom(32), True, True))
    board = with_backend(pure, member_from_invite, with_backend(nacl, admin.invite, os.urandom(32), True, True))
    board.set_dictionary([b"\x48" + b"\x01" * 8])
    body = b"\x83\x48" + b"\x01" * 8 + b"\x01\x02"
    for m in (with_backend(pure, board.seal_reading, body, os.urandom(32), 0),
              with_backend(pure, board.seal_reading, body, os.urandom(32), 0)):
        assert with_backend(nacl, host.open, m, 0).body == body
    m = with_backend(nacl, host.seal_batch, [b"a", b"b"], os.urandom(32), 0)
    assert [p.body for p in with_backend(pure, board.open, m, 0).publications] == [b"a", b"b"]
    # the same member state seals the same bytes on both backends
    rec = host.to_record()
    from shared_protocol.groups.member import Member
    a = with_backend(nacl, lambda: Member.from_record(rec).seal_reading(b"x", os.urandom(32), 0))
    b = with_backend(pure, lambda: Member.from_record(rec).seal_reading(b"x", os.urandom(32), 0))
    assert a == b
