"""Who this machine is, in one place: the home directory, the node's
static key, the proxy's static key and the proxies a node has met.

- home: ``--home``, else ``$UPSYCLE_HOME``, else ``~/.upsycle``;
- a static key (X25519, Noise XX): 32 bytes as hex in a file of mode 0600,
  made on first use; the node's is ``HOME/node_key`` (its node id is bound
  to it: session/secure_client.node_id_for), the proxy's is
  ``DATA/proxy_key``; nodes pin or remember a proxy's public key
  (docs/proxy.md, "Secure links");
- known proxies (trust on first use): ``HOME/known_proxies``, one
  ``host:port hexkey`` a line;
- a plaintext node id (links without Noise): ``HOME/node_id``.

Files are written whole, then renamed over the old ones, so a crash never
leaves half a key. A malformed key file is an error, never replaced:
replacing it would change an identity others rely on.
"""
import os
import tempfile

from shared_protocol.crypto import api
from upsycle.errors import IDENTITY, NODE_KEY, HostError

KEY_LEN = 32
NODE_KEY_FILE = "node_key"
PROXY_KEY_FILE = "proxy_key"
KNOWN_PROXIES_FILE = "known_proxies"
NODE_ID_FILE = "node_id"
# Plaintext node ids: 16 random bytes, the length of a secure node id.
NODE_ID_LEN = 16


class IdentityError(HostError):
    code = IDENTITY


def home(explicit=None):
    return explicit or os.environ.get("UPSYCLE_HOME") or os.path.join(os.path.expanduser("~"), ".upsycle")


def make_home(directory):
    """Create a directory that holds secret keys 0700, or tighten an
    existing one (docs/proxy.md)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.stat(directory).st_mode & 0o777 != 0o700:
        os.chmod(directory, 0o700)


def write_private(path, data):
    """Write data (bytes or str) to path with mode 0600, atomically: a temp
    file beside it, fsync, rename (secret keys live in these files)."""
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_or_create_key(directory, name, code=IDENTITY):
    """The key in directory/name, or a new one written there."""
    path = os.path.join(directory, name)
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        make_home(directory)
        key = os.urandom(KEY_LEN)
        write_private(path, key.hex() + "\n")
        return key
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_LEN:
        raise IdentityError("%s is not a %d-byte hex key; restore it or delete it to make a new identity"
                            % (path, KEY_LEN), code)
    return key


def public_key(private):
    return api.x25519_public(private)


def node_key(home_dir=None):
    """This node's static X25519 key (HOME/node_key)."""
    return load_or_create_key(home(home_dir), NODE_KEY_FILE, NODE_KEY)


def proxy_key(data_dir):
    """The proxy's static X25519 key (DATA/proxy_key)."""
    return load_or_create_key(data_dir, PROXY_KEY_FILE)


def _peer(host, port):
    return "%s:%d" % (host, port)


def known_proxy_key(home_dir, host, port):
    """The key remembered for HOST:PORT (trust on first use), or None."""
    try:
        with open(os.path.join(home(home_dir), KNOWN_PROXIES_FILE)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == _peer(host, port):
                    return bytes.fromhex(parts[1])
    except (OSError, ValueError):
        pass
    return None


def remember_proxy_key(home_dir, host, port, key):
    d = home(home_dir)
    make_home(d)
    path = os.path.join(d, KNOWN_PROXIES_FILE)
    try:
        with open(path) as f:
            lines = [ln for ln in f if ln.split()[:1] != [_peer(host, port)]]
    except OSError:
        lines = []
    lines.append("%s %s\n" % (_peer(host, port), bytes(key).hex()))
    write_private(path, "".join(lines))


def plaintext_node_id(home_dir=None):
    """This machine's node id on plaintext links (HOME/node_id). Secure
    links use the id bound to node_key instead."""
    d = home(home_dir)
    path = os.path.join(d, NODE_ID_FILE)
    try:
        with open(path) as f:
            return bytes.fromhex(f.read().strip())
    except (OSError, ValueError):
        pass
    os.makedirs(d, exist_ok=True)
    nid = os.urandom(NODE_ID_LEN)
    write_private(path, nid.hex() + "\n")
    return nid
