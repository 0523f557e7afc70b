"""Constant-time comparison of byte strings.

Comparing a MAC with ``==`` returns at the first differing byte, which tells a
forger how many leading bytes were right. This loop touches every byte and
only ORs differences together, so its running time depends on the lengths
alone (lengths are public: a tag is always 16 bytes).
"""


def bytes_eq(a, b):
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0
