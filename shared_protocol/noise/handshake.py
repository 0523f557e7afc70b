"""Sans-I/O Noise_XX_25519_ChaChaPoly_SHA256 handshake (Noise rev. 34, §5.3, §7.5).

    XX:
      -> e
      <- e, ee, s, es
      -> s, se

XX lets both sides learn each other's static key during the handshake, so a
node does not need to know a proxy's key in advance (it may check it against
an expected key, see ``expected_remote_static``). Both static keys travel
encrypted, and the session keys come from ephemeral DH: forward secrecy.

The object does no I/O and draws no randomness: the caller passes the
ephemeral private key in. ``read_message`` is transactional: if a message is
truncated, altered or carries the wrong static key, the typed error is raised
and the handshake stays exactly as it was, so a forged datagram cannot kill a
handshake in progress.

The message pattern is data (``PATTERN_XX``): each entry lists the tokens of
one message; even indexes are sent by the initiator.
"""
from shared_protocol.crypto import api
from shared_protocol.crypto import errors as cerr
from shared_protocol.noise import errors as nerr
from shared_protocol.noise.symmetric import DHLEN, HASHLEN, MESSAGE_MAX, TAGLEN, CipherState

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
PATTERN_XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))
# Largest handshake payload we accept or send. Handshake payloads carry a few
# small fields (a protocol version, a node name); 1 KiB is far above that and
# keeps a hostile peer from making a board buffer 64 KiB before authenticating.
HANDSHAKE_PAYLOAD_MAX = 1024


def hkdf2(ck, ikm):
    """Noise's HKDF (§4.3) with two outputs. Not RFC 5869's API: the chaining
    key is the salt, there is no info, and outputs are chained HMACs."""
    temp = api.hmac_sha256(ck, ikm)
    o1 = api.hmac_sha256(temp, b"\x01")
    o2 = api.hmac_sha256(temp, o1 + b"\x02")
    return o1, o2



class SymmetricState:
    def __init__(self, protocol_name):
        # §5.2 InitializeSymmetric: names of HASHLEN bytes or less are padded.
        if len(protocol_name) <= HASHLEN:
            h = protocol_name + b"\x00" * (HASHLEN - len(protocol_name))
        else:
            h = api.sha256(protocol_name)
        self.h = h
        self.ck = h
        self.cs = CipherState()

    def copy(self):
        # (MicroPython classes have no __new__ to call, hence a fresh init)
        s = SymmetricState(b"")
        s.h = self.h
        s.ck = self.ck
        s.cs = self.cs.copy()
        return s

    def mix_key(self, ikm):
        self.ck, temp_k = hkdf2(self.ck, ikm)
        self.cs = CipherState(temp_k)  # HASHLEN == 32: no truncation needed

    def mix_hash(self, data):
        self.h = api.sha256(self.h + data)

    def encrypt_and_hash(self, plaintext):
        ct = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext):
        pt = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self):
        k1, k2 = hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


class Handshake:
    def __init__(self, initiator, static_private, ephemeral_private, prologue=b"",
                 expected_remote_static=None):
        """static_private, ephemeral_private: 32-byte X25519 secrets.
        expected_remote_static: the peer's X25519 public key if we know it;
        any other key proved by the peer raises nerr.UnexpectedStaticKey."""
        for name, v in (("static_private", static_private), ("ephemeral_private", ephemeral_private)):
            if not isinstance(v, (bytes, bytearray)) or len(v) != DHLEN:
                raise nerr.NoiseUsageError(message=__debug__ and "%s must be 32 bytes" % name)
        self.initiator = initiator
        self._s = bytes(static_private)
        self._s_pub = api.x25519_public(self._s)
        self._e = bytes(ephemeral_private)
        self._e_pub = None
        self._expected = expected_remote_static
        self._ss = SymmetricState(PROTOCOL_NAME)
        self._ss.mix_hash(prologue)
        self.remote_static = None
        self._re = None
        self._step = 0
        self._result = None

    @property
    def static_public(self):
        return self._s_pub

    @property
    def ephemeral_public(self):
        """Our ephemeral public key (computed once: a scalar multiplication
        costs a board tens of milliseconds)."""
        if self._e_pub is None:
            self._e_pub = api.x25519_public(self._e)
        return self._e_pub

    @property
    def messages(self):
        """Handshake messages written or read so far (0..3)."""
        return self._step

    @property
    def complete(self):
        return self._step >= len(PATTERN_XX)

    @property
    def handshake_hash(self):
        """h after the last message (§5.2 GetHandshakeHash): a channel binding."""
        return self._ss.h

    def is_my_turn(self):
        return not self.complete and (self._step % 2 == 0) == self.initiator

    def _dh(self, token):
        # es: DH(initiator's e, responder's s); se: DH(initiator's s, responder's e)
        if token == "ee":
            return api.x25519(self._e, self._re)
        if token == "es":
            return api.x25519(self._e, self.remote_static) if self.initiator else api.x25519(self._s, self._re)
        if token == "se":
            return api.x25519(self._s, self._re) if self.initiator else api.x25519(self._e, self.remote_static)
        return api.x25519(self._s, self.remote_static)  # "ss", unused by XX

    def write_message(self, payload=b""):
        if not self.is_my_turn():
            raise nerr.NoiseUsageError(message=__debug__ and "not our turn to write a handshake message")
        if len(payload) > HANDSHAKE_PAYLOAD_MAX:
            raise nerr.NoiseUsageError(message=__debug__ and "handshake payload over %d bytes" % HANDSHAKE_PAYLOAD_MAX)
        ss = self._ss
        out = []
        for token in PATTERN_XX[self._step]:
            if token == "e":
                out.append(self.ephemeral_public)
                ss.mix_hash(self._e_pub)
            elif token == "s":
                out.append(ss.encrypt_and_hash(self._s_pub))
            else:
                ss.mix_key(self._dh(token))
        out.append(ss.encrypt_and_hash(payload))
        self._step += 1
        return b"".join(out)

    def read_message(self, message):
        """Returns the payload; on any error the handshake is unchanged."""
        if self.complete or self.is_my_turn():
            raise nerr.NoiseUsageError(message=__debug__ and "not expecting a handshake message now")
        if len(message) > MESSAGE_MAX:
            raise nerr.HandshakeFailed(message=__debug__ and "handshake message over %d bytes" % MESSAGE_MAX)
        saved = (self._ss, self._re, self.remote_static)
        self._ss = self._ss.copy()
        try:
            payload = self._read(bytes(message))
        except BaseException:
            self._ss, self._re, self.remote_static = saved
            raise
        self._step += 1
        return payload

    def _read(self, msg):
        ss = self._ss
        pos = 0
        try:
            for token in PATTERN_XX[self._step]:
                if token == "e":
                    if len(msg) - pos < DHLEN:
                        raise nerr.HandshakeFailed(message=__debug__ and "truncated: ephemeral key missing")
                    self._re = msg[pos:pos + DHLEN]
                    pos += DHLEN
                    ss.mix_hash(self._re)
                elif token == "s":
                    n = DHLEN + (TAGLEN if ss.cs.has_key() else 0)
                    if len(msg) - pos < n:
                        raise nerr.HandshakeFailed(message=__debug__ and "truncated: static key missing")
                    rs = ss.decrypt_and_hash(msg[pos:pos + n])
                    pos += n
                    if self._expected is not None and not api.constant_time_eq(rs, self._expected):
                        raise nerr.UnexpectedStaticKey(message=__debug__ and "peer proved a static key we were not told to expect")
                    self.remote_static = rs
                else:
                    ss.mix_key(self._dh(token))
            rest = msg[pos:]
            if ss.cs.has_key() and len(rest) < TAGLEN:
                raise nerr.HandshakeFailed(message=__debug__ and "truncated: payload tag missing")
            if len(rest) - (TAGLEN if ss.cs.has_key() else 0) > HANDSHAKE_PAYLOAD_MAX:
                raise nerr.HandshakeFailed(message=__debug__ and "handshake payload over %d bytes" % HANDSHAKE_PAYLOAD_MAX)
            return ss.decrypt_and_hash(rest)
        except nerr.DecryptFailed:
            raise nerr.HandshakeFailed(message=__debug__ and "handshake message does not authenticate (altered or wrong peer)")
        except cerr.BadPublicKey:
            raise nerr.HandshakeFailed(message=__debug__ and "peer sent a small-order public key")

    def split(self):
        """(send, receive) CipherStates for the transport phase (§5.2 Split)."""
        if not self.complete:
            raise nerr.NoiseUsageError(message=__debug__ and "handshake not complete")
        c1, c2 = self._ss.split()
        # c1 encrypts initiator -> responder, c2 the other way (§5.2).
        return (c1, c2) if self.initiator else (c2, c1)
