"""The JSON test vectors themselves are right: checked against hashlib, hmac,
libsodium and OpenSSL, independent of our code."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "vectors"))

import check_vectors  # noqa: E402


def test_vectors_agree_with_independent_implementations(capsys):
    check_vectors.main()
    assert "checked 32 vectors" in capsys.readouterr().out
