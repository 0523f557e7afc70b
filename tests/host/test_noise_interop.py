"""Our Noise_XX handshake against the `noiseprotocol` package (PyPI), in both
roles, with messages both ways afterwards; on both crypto backends."""
import os

import pytest
from noise.connection import Keypair, NoiseConnection

from shared_protocol.crypto import api
from shared_protocol.crypto.pure import PureBackend
from shared_protocol.noise.handshake import PROTOCOL_NAME, Handshake
from upsycle.crypto_nacl import NaclBackend

PROLOGUE = b"upsycle/1"


@pytest.fixture(params=["pure", "nacl"])
def backend(request):
    old = api.use_backend(PureBackend() if request.param == "pure" else NaclBackend())
    yield request.param
    api.use_backend(old)


def _theirs(initiator, static):
    c = NoiseConnection.from_name(PROTOCOL_NAME)
    if initiator:
        c.set_as_initiator()
    else:
        c.set_as_responder()
    c.set_keypair_from_private_bytes(Keypair.STATIC, static)
    c.set_prologue(PROLOGUE)
    c.start_handshake()
    return c


def test_we_initiate_they_respond(backend):
    our_s, their_s = os.urandom(32), os.urandom(32)
    ours = Handshake(True, our_s, os.urandom(32), PROLOGUE)
    theirs = _theirs(False, their_s)
    assert theirs.read_message(ours.write_message(b"hello")) == b"hello"
    assert ours.read_message(theirs.write_message(b"proxy here")) == b"proxy here"
    assert theirs.read_message(ours.write_message(b"node key")) == b"node key"
    assert ours.complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == api.x25519_public(their_s)
    send, recv = ours.split()
    for i in range(3):
        assert theirs.decrypt(send.encrypt_with_ad(b"", b"reading %d" % i)) == b"reading %d" % i
        assert recv.decrypt_with_ad(b"", theirs.encrypt(b"ack %d" % i)) == b"ack %d" % i


def test_they_initiate_we_respond(backend):
    our_s, their_s = os.urandom(32), os.urandom(32)
    ours = Handshake(False, our_s, os.urandom(32), PROLOGUE, expected_remote_static=api.x25519_public(their_s))
    theirs = _theirs(True, their_s)
    assert ours.read_message(theirs.write_message(b"")) == b""
    assert theirs.read_message(ours.write_message(b"resp")) == b"resp"
    assert ours.read_message(theirs.write_message(b"fin")) == b"fin"
    assert ours.complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    send, recv = ours.split()
    big = os.urandom(60000)
    assert theirs.decrypt(send.encrypt_with_ad(b"", big)) == big
    assert recv.decrypt_with_ad(b"", theirs.encrypt(b"x" * 100)) == b"x" * 100


def test_prologue_mismatch_fails_against_them(backend):
    from shared_protocol.noise.errors import HandshakeFailed
    ours = Handshake(True, os.urandom(32), os.urandom(32), b"other prologue")
    theirs = _theirs(False, os.urandom(32))
    theirs.read_message(ours.write_message(b""))
    msg2 = theirs.write_message(b"")
    with pytest.raises(HandshakeFailed):
        ours.read_message(msg2)


def test_rekey_matches_theirs(backend):
    our_s, their_s = os.urandom(32), os.urandom(32)
    ours = Handshake(True, our_s, os.urandom(32), PROLOGUE)
    theirs = _theirs(False, their_s)
    theirs.read_message(ours.write_message(b""))
    ours.read_message(theirs.write_message(b""))
    theirs.read_message(ours.write_message(b""))
    send, recv = ours.split()
    assert theirs.decrypt(send.encrypt_with_ad(b"", b"before")) == b"before"
    send.rekey()
    theirs.rekey_inbound_cipher()
    assert theirs.decrypt(send.encrypt_with_ad(b"", b"after")) == b"after"
    theirs.rekey_outbound_cipher()
    recv.rekey()
    assert recv.decrypt_with_ad(b"", theirs.encrypt(b"back")) == b"back"
