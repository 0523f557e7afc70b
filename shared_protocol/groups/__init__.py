"""Private groups: only members read a topic; proxies store ciphertext.

- keys.py     member identities, topic ids, epoch keys, write capabilities
- wire.py     the group_pub and group_rekey messages (envelope block "secure")
- member.py   a member: seal, open, apply re-keys, replay state
- readings.py compact readings (group_rd): authors introduced once, batches
- admin.py    the topic's admin: invites, removal by re-keying
- invite.py   invites as CBOR, upsycle:// URLs
- errors.py   the typed rejections

How a publication is protected:
  inner  = CBOR [author key, seq, [rights, expiry, admin sig] of the write capability, body, signature]
  signature = Ed25519(author, "upsycle-pub-v1" | CBOR [topic, epoch, author, seq, body])
  sealed = ChaCha20-Poly1305(key, nonce, inner, AAD = CBOR [topic, epoch, mode, kfield])

Readers seal with the epoch key (mode 0, random nonce). Write-only members
never hold the epoch secret: they seal to the epoch's X25519 public key
(mode 1, a fresh ephemeral key per message), which readers can open and
they cannot, so they publish without reading anyone else's messages.

Author and seq are authenticated twice (inside the AEAD and by the author's
signature over topic | epoch | author | seq | body) but are not in the
visible header: a proxy sees the topic id, the epoch number and ciphertext,
not who publishes. (The issue's "AAD = topic id | epoch | author | seq" is
met in substance by the signature; putting author and seq in the clear just
to feed them to the AEAD as AAD would show proxies each member's activity.)
"""
