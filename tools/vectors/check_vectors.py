"""Check tests/vectors/*.json (typed from the RFCs) against independent
implementations: hashlib, hmac, libsodium via PyNaCl, OpenSSL via
`cryptography` (for raw ChaCha20 and Poly1305). Run once when a
vector file changes: a typo in a vector shows up here, not as a mystery
failure of our own code.

    python tools/vectors/check_vectors.py
"""
import hashlib
import hmac
import json
import os

from nacl import bindings as b

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VEC = os.path.join(ROOT, "tests", "vectors")


def load(name):
    with open(os.path.join(VEC, name)) as f:
        return json.load(f)


def h(s):
    return bytes.fromhex(s)


def main():
    n = 0
    for v in load("rfc7748_x25519.json")["scalarmult"]:
        assert b.crypto_scalarmult(h(v["scalar"]), h(v["u"])) == h(v["out"]), v["name"]
        n += 1
    for v in load("rfc7748_x25519.json")["iterated"]:
        k = u = h("09" + "00" * 31)
        for _ in range(v["iterations"]):
            k, u = b.crypto_scalarmult(k, u), k
        assert k == h(v["out"]), v
        n += 1
    for v in load("rfc8032_ed25519.json")["vectors"]:
        pk, sk = b.crypto_sign_seed_keypair(h(v["secret"]))
        assert pk == h(v["public"]), v["name"]
        assert b.crypto_sign(h(v["message"]), sk)[:64] == h(v["signature"]), v["name"]
        n += 1
    for v in load("fips180_sha512.json")["vectors"]:
        msg = h(v["message"]) * v.get("repeat", 1)
        assert hashlib.sha512(msg).hexdigest() == v["digest"], v["name"]
        n += 1
    cc = load("rfc8439_chacha20poly1305.json")
    # PyNaCl exposes neither raw Poly1305 nor the raw ChaCha20 block; the
    # `cryptography` package (OpenSSL), installed alongside, does.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    def chacha(key, counter, nonce, data):
        full = counter.to_bytes(4, "little") + nonce
        return Cipher(algorithms.ChaCha20(key, full), mode=None).encryptor().update(data)

    for v in cc["poly1305"]:
        assert Poly1305.generate_tag(h(v["key"]), h(v["message"])) == h(v["tag"]), v["name"]
        n += 1
    for v in cc["block"]:
        assert chacha(h(v["key"]), v["counter"], h(v["nonce"]), bytes(64)) == h(v["out"]), v["name"]
        n += 1
    for v in cc["encrypt"]:
        assert chacha(h(v["key"]), v["counter"], h(v["nonce"]), h(v["plaintext"])) == h(v["ciphertext"]), v["name"]
        n += 1
    for v in cc["poly1305_keygen"]:
        assert chacha(h(v["key"]), 0, h(v["nonce"]), bytes(32)) == h(v["out"]), v["name"]
        n += 1
    for v in cc["aead"]:
        ct = b.crypto_aead_chacha20poly1305_ietf_encrypt(h(v["plaintext"]), h(v["aad"]), h(v["nonce"]), h(v["key"]))
        assert ct == h(v["ciphertext"]) + h(v["tag"]), v["name"]
        n += 1
    for v in load("rfc5869_hkdf.json")["vectors"]:
        prk = hmac.new(h(v["salt"]) or b"\0" * 32, h(v["ikm"]), hashlib.sha256).digest()
        assert prk == h(v["prk"]), v["name"]
        n += 1
    print("checked %d vectors against hashlib/hmac/libsodium/OpenSSL" % n)


if __name__ == "__main__":
    main()
