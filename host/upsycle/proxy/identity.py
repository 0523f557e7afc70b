"""The proxy's static X25519 key (its Noise identity), kept in the data
directory as ``proxy_key`` (hex, mode 0600), generated on first start.
Nodes pin or remember its public key (docs/proxy.md, "Secure links")."""
import os

from shared_protocol.crypto import api

KEY_FILE = "proxy_key"


class IdentityError(Exception):
    code = "identity"


def public_key(private):
    return api.x25519_public(private)


def load_or_create_key(data_dir, name=KEY_FILE):
    """Read the key, or create it (0600, written then renamed, so a crash
    never leaves half a key). A malformed file is an error, never replaced:
    replacing it would change the proxy's identity under its nodes."""
    path = os.path.join(data_dir, name)
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        text = None
    if text is not None:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise IdentityError("%s is not a 32-byte hex key; restore it or delete it to make a new identity" % path)
        return key
    os.makedirs(data_dir, exist_ok=True)
    key = os.urandom(32)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key
