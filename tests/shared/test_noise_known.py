# Runs on CPython and in the MicroPython VM: the "seen before" hint in
# message 1 (noise/known.py) as the node makes it and the proxy checks it.
from shared_protocol.crypto import api
from shared_protocol.noise import known
from shared_protocol.noise.handshake import Handshake
from shared_protocol.noise.udp import HS1_PAD, UdpSession
from shared_protocol.rand import Rng


def test_both_ends_derive_the_same_key_id_and_the_tag_binds_the_ephemeral_key():
    r = Rng(5)
    node, proxy = r.randbytes(32), r.randbytes(32)
    s_node = known.shared_secret(node, api.x25519_public(proxy))
    s_proxy = known.shared_secret(proxy, api.x25519_public(node))
    assert s_node == s_proxy
    hs = Handshake(True, node, r.randbytes(32), b"p", api.x25519_public(proxy))
    hint = known.hint(s_node, hs.ephemeral_public)
    assert len(hint) == known.HINT_SIZE
    u = UdpSession(hs)
    u.start(0, hint)
    m1 = u.packets_to_send()[0]
    assert len(m1) == 1 + 32 + HS1_PAD
    kid, tag = known.split(m1[33:])            # what the proxy reads
    assert kid == known.key_id(s_proxy)
    assert tag == known.tag(s_proxy, m1[1:33])
    other = Handshake(True, node, r.randbytes(32), b"p")
    assert known.tag(s_proxy, other.ephemeral_public) != tag   # not movable to another handshake


def test_padding_only_is_no_hint():
    assert known.split(bytes(HS1_PAD)) is None
    assert known.split(b"\x01" * 10) is None
