# Runs on CPython and in the MicroPython VM: every pure-Python primitive
# against the RFC / FIPS test vectors in tests/vectors/.
from rig import load_vectors, raises, unhex
from shared_protocol.crypto import api, chacha20poly1305, ed25519, hkdf, x25519
from shared_protocol.crypto.errors import AuthenticationFailed, BadPublicKey, BadSignature
from shared_protocol.crypto.sha512 import sha512


def test_sha512_fips180_vectors():
    for v in load_vectors("fips180_sha512.json")["vectors"]:
        h = sha512()
        chunk = unhex(v["message"]) * 1000 if v.get("repeat") else unhex(v["message"])
        for _ in range(v.get("repeat", 1) // 1000 or 1):
            h.update(chunk)
        assert h.hexdigest() == v["digest"], v["name"]


def test_sha512_incremental_equals_one_shot():
    data = bytes(range(256)) * 3
    for split in (0, 1, 111, 112, 127, 128, 129, 500):
        h = sha512(data[:split])
        h.update(data[split:])
        assert h.digest() == sha512(data).digest(), split


def test_x25519_rfc7748_vectors():
    vec = load_vectors("rfc7748_x25519.json")
    for v in vec["scalarmult"]:
        assert x25519.scalarmult(unhex(v["scalar"]), unhex(v["u"])) == unhex(v["out"]), v["name"]
        assert api.x25519(unhex(v["scalar"]), unhex(v["u"])) == unhex(v["out"]), v["name"]


def test_x25519_rfc7748_iterated():
    for v in load_vectors("rfc7748_x25519.json")["iterated"]:
        # 1000 ladders take ~15 s in the VM: worth it, the iterated vector
        # catches errors that single vectors miss
        k = u = x25519.BASE_POINT
        for _ in range(v["iterations"]):
            k, u = x25519.scalarmult(k, u), k
        assert k == unhex(v["out"]), v["iterations"]


def test_x25519_rejects_small_order_point():
    # u = 0 and u = 1 have small order: the shared secret is all zeros (RFC 7748 §6.1)
    for u in (bytes(32), b"\x01" + bytes(31)):
        e = raises(BadPublicKey, api.x25519, b"\x42" * 32, u)
        assert e.code == "bad_public_key"


def test_ed25519_rfc8032_vectors():
    for v in load_vectors("rfc8032_ed25519.json")["vectors"]:
        seed, pub, msg, sig = unhex(v["secret"]), unhex(v["public"]), unhex(v["message"]), unhex(v["signature"])
        assert ed25519.public_key(seed) == pub, v["name"]
        assert api.ed25519_sign(seed, msg) == sig, v["name"]
        api.ed25519_verify(pub, msg, sig)
        bad = bytearray(sig)
        bad[0] ^= 1
        raises(BadSignature, api.ed25519_verify, pub, msg, bytes(bad))
        raises(BadSignature, api.ed25519_verify, pub, msg + b"!", sig)


def test_ed25519_rejects_non_canonical_s():
    v = load_vectors("rfc8032_ed25519.json")["vectors"][0]
    pub, sig = unhex(v["public"]), unhex(v["signature"])
    s = int.from_bytes(sig[32:], "little") + ed25519.L  # same value mod L, not canonical
    forged = sig[:32] + s.to_bytes(32, "little")
    raises(BadSignature, api.ed25519_verify, pub, b"", forged)


def test_ed25519_rejects_small_order_key():
    # the identity point (y = 1) verifies "any" signature with S = 0 under the
    # cofactorless equation if small-order keys were allowed
    ident = b"\x01" + bytes(31)
    sig = ident + bytes(32)
    raises(BadSignature, api.ed25519_verify, ident, b"msg", sig)
    raises(BadPublicKey, api.ed25519_pk_to_x25519, ident)


def test_ed25519_to_x25519_keys_agree():
    seed = unhex(load_vectors("rfc8032_ed25519.json")["vectors"][1]["secret"])
    pub = api.ed25519_public(seed)
    assert api.x25519_public(api.ed25519_seed_to_x25519(seed)) == api.ed25519_pk_to_x25519(pub)


def test_chacha20_rfc8439_vectors():
    vec = load_vectors("rfc8439_chacha20poly1305.json")
    for v in vec["block"]:
        assert chacha20poly1305.chacha20_block(unhex(v["key"]), v["counter"], unhex(v["nonce"])) == unhex(v["out"]), v["name"]
    for v in vec["encrypt"]:
        out = chacha20poly1305.chacha20_xor(unhex(v["key"]), v["counter"], unhex(v["nonce"]), unhex(v["plaintext"]))
        assert out == unhex(v["ciphertext"]), v["name"]
    for v in vec["poly1305"]:
        assert chacha20poly1305.poly1305(unhex(v["key"]), unhex(v["message"])) == unhex(v["tag"]), v["name"]
    for v in vec["poly1305_keygen"]:
        assert chacha20poly1305.chacha20_block(unhex(v["key"]), 0, unhex(v["nonce"]))[:32] == unhex(v["out"]), v["name"]


def test_aead_rfc8439_vector_and_tamper():
    for v in load_vectors("rfc8439_chacha20poly1305.json")["aead"]:
        key, nonce, aad, pt = unhex(v["key"]), unhex(v["nonce"]), unhex(v["aad"]), unhex(v["plaintext"])
        sealed = api.aead_encrypt(key, nonce, pt, aad)
        assert sealed == unhex(v["ciphertext"]) + unhex(v["tag"]), v["name"]
        assert api.aead_decrypt(key, nonce, sealed, aad) == pt
        for i in (0, len(sealed) - 1):
            bad = bytearray(sealed)
            bad[i] ^= 0x80
            e = raises(AuthenticationFailed, api.aead_decrypt, key, nonce, bytes(bad), aad)
            assert e.code == "aead_auth_failed"
        raises(AuthenticationFailed, api.aead_decrypt, key, nonce, sealed, aad + b"x")
        raises(AuthenticationFailed, api.aead_decrypt, key, nonce, sealed[:15], aad)


def test_hkdf_rfc5869_vectors():
    for v in load_vectors("rfc5869_hkdf.json")["vectors"]:
        salt, ikm, info = unhex(v["salt"]), unhex(v["ikm"]), unhex(v["info"])
        assert hkdf.hkdf_extract(salt, ikm) == unhex(v["prk"]), v["name"]
        assert api.hkdf(salt, ikm, info, v["length"]) == unhex(v["okm"]), v["name"]


def test_api_rejects_wrong_sizes_and_oversized_input():
    from shared_protocol.crypto.errors import CryptoUsageError
    raises(CryptoUsageError, api.x25519, b"short", bytes(32))
    raises(CryptoUsageError, api.aead_encrypt, bytes(32), bytes(11), b"", b"")
    raises(CryptoUsageError, api.aead_encrypt, bytes(32), bytes(12), bytes(api.MESSAGE_SIZE_MAX + 1), b"")
    raises(CryptoUsageError, api.ed25519_sign, bytes(32), bytes(api.MESSAGE_SIZE_MAX + 1))
    raises(CryptoUsageError, api.hkdf, b"", b"k", b"", 255 * 32 + 1)
    raises(CryptoUsageError, api.random_bytes, 0)


def test_constant_time_eq():
    assert api.constant_time_eq(b"abc", b"abc")
    assert not api.constant_time_eq(b"abc", b"abd")
    assert not api.constant_time_eq(b"abc", b"ab")


def test_random_source_hook():
    from shared_protocol.crypto.errors import NoRandomSource
    from shared_protocol.rand import Rng
    import os
    if not hasattr(os, "urandom"):
        # the WebAssembly VM: no platform source until one is installed
        e = raises(NoRandomSource, api.random_bytes, 32)
        assert e.code == "no_random_source"
    api.set_random_source(Rng(5).randbytes)
    try:
        assert api.random_bytes(32) == Rng(5).randbytes(32)
        api.set_random_source(lambda n: b"\x00" * (n - 1))
        raises(NoRandomSource, api.random_bytes, 16)   # a short read is refused
    finally:
        api.set_random_source(None)


def test_ed25519_base_table_constants_are_the_multiples_of_the_base_point():
    # The table is written out as constants (ed25519._BASE_TABLE), each the
    # affine point packed as x + (y << 256); each entry must be [i]B, the same
    # point _table(BASE) computes, and unpack with T = xy.
    from shared_protocol.crypto.field import P
    computed = ed25519._table(ed25519.BASE)
    assert len(ed25519._BASE_TABLE) == 16
    for i in range(16):
        v = ed25519._BASE_TABLE[i]
        x, y = v & ((1 << 256) - 1), v >> 256
        assert x < P and y < P, i
        cX, cY, cZ, _ = computed[i]
        assert x * cZ % P == cX % P and y * cZ % P == cY % P, i
        assert ed25519._base_entry(v) == (x, y, 1, x * y % P), i


def test_ed25519_scalarmult_base_agrees_with_the_generic_windows():
    # scalarmult_base reads the packed constants; _scalarmult the table of a
    # point computed at run time: the same multiples of B, edge scalars too.
    tb = ed25519._table(ed25519.BASE)
    for n in (0, 1, 15, 16, 17, (1 << 252) + 3, ed25519.L - 1, ed25519.L, (1 << 256) - 1):
        assert ed25519.encode_point(ed25519.scalarmult_base(n)) == ed25519.encode_point(ed25519._scalarmult(tb, n)), n


def test_curve_constants_written_out_are_the_formulas():
    # field.P, ed25519.L and the base point's x*y are literals (a frozen
    # image keeps them in flash): the values RFC 7748 / RFC 8032 §5.1 define
    from shared_protocol.crypto import field
    assert field.P == 2 ** 255 - 19
    assert ed25519.L == 2 ** 252 + 27742317777372353535851937790883648493
    x, y, z, t = ed25519.BASE
    assert z == 1 and t == x * y % field.P
    # the base point is on the curve -x^2 + y^2 = 1 + d x^2 y^2 (RFC 8032 §5.1)
    d = -121665 * pow(121666, field.P - 2, field.P) % field.P
    assert (-x * x + y * y - 1 - d * x * x * y * y) % field.P == 0


def test_operation_kinds_out_of_range_are_refused():
    from shared_protocol.dmc import ops, crdts
    assert crdts.cls(0) is None and crdts.cls(5) is None and crdts.cls("1") is None and crdts.cls(True) is None
    assert crdts.cls(ops.T_LOG).__name__ == "TimeLog"
