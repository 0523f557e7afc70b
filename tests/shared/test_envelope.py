# The versioned envelope and its registry, on CPython and in the MicroPython VM.
# Vectors: tests/vectors/envelope.json, against the test registry below.
from rig import load_vectors, raises, unhex
from test_cbor import same, untag
from shared_protocol.wire import cbor, envelope as env


def _registry():
    r = env.Registry()
    r.register(130, "reading", (
        ("topic", env.BYTES, 16), ("msg_id", env.UINT, 0xFFFFFFFF), ("ts_ms", env.UINT, None),
        ("value", env.FLOAT, None), ("key", env.TEXT, 16)))
    r.register(131, "note", (("text", env.TEXT, 32), ("blob", env.BYTES + env.NULLABLE, 4)), min_fields=1)
    r.register(132, "bag", (("items", env.LIST, 8), ("attrs", env.MAP, 4), ("flag", env.BOOL, None)))
    return r


def test_valid_vectors_round_trip():
    r = _registry()
    for vec in load_vectors("envelope.json")["valid"]:
        data = unhex(vec["hex"])
        msg = r.decode(data)
        assert msg.name == vec["type"]
        values = untag(vec["values"])
        assert same(msg.values, values), (msg.values, values)
        assert r.encode(vec["type"], *values) == data
        assert r.encode_message(msg) == data


def test_invalid_vectors_raise_typed_errors():
    r = _registry()
    vectors = load_vectors("envelope.json")["invalid"]
    assert len(vectors) >= 20
    for vec in vectors:
        cls = env.EnvelopeError if vec["error"] == "envelope" else cbor.DecodeError
        e = raises(cls, r.decode, unhex(vec["hex"]))
        assert e.code == vec["code"], "%s: got %s want %s" % (vec["why"], e.code, vec["code"])


def test_field_access_by_name_and_optional_fields():
    r = _registry()
    m = r.decode(r.encode("note", "hi"))
    assert m["text"] == "hi" and m["blob"] is None and m.get("blob", 5) == 5
    m = r.decode(r.encode("reading", b"t" * 16, 1, 2, 3.5, "k"))
    assert m["value"] == 3.5 and m["topic"] == b"t" * 16


def test_sender_mistakes_are_local_errors():
    r = _registry()
    assert raises(env.RegistryError, r.encode, "nope").code == env.E_TYPE
    assert raises(env.RegistryError, r.encode, "note").code == env.E_ARITY
    assert raises(env.RegistryError, r.encode, "note", 5).code == env.E_FIELD
    assert raises(env.RegistryError, r.encode, "note", "x" * 33).code == env.E_BOUND
    assert raises(env.RegistryError, r.register, 130, "other", ()).code == "code"
    assert raises(env.RegistryError, r.register, 133, "note", ()).code == "name"
    assert raises(env.RegistryError, r.register, 300, "big", ()).code == "code"
    # registering the same declaration again (module imported twice) is fine
    r.register(131, "note", (("text", env.TEXT, 32), ("blob", env.BYTES + env.NULLABLE, 4)), min_fields=1)


def test_type_blocks_do_not_overlap():
    spans = sorted(env.TYPE_BLOCKS.values())
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 < b0
    assert spans[0][0] == 0 and spans[-1][1] == 255


def test_shared_registry_has_core_messages():
    data = env.REGISTRY.encode("error", "bad_topic", "no such topic", None)
    m = env.REGISTRY.decode(data)
    assert m.name == "error" and m["code"] == "bad_topic" and m["ref"] is None
    assert env.REGISTRY.decode(env.REGISTRY.encode("ping", 42))["nonce"] == 42


def test_literal_declarations_are_checked_and_found_by_name():
    # board code declares its types as literal tuples (Registry.add); a
    # board finds a type by name with a scan, a host with a dict
    r = env.Registry()
    # field specs are one flat tuple, three items a field
    t = (140, "probe", ("n", env.UINT, 9, "s", env.TEXT, 4), 1)
    assert r.add(t) is t
    assert r.type("probe") is t and r.type(140) is t
    assert r.add((140, "probe", t[2], 1)) is t            # the same declaration again
    assert raises(env.RegistryError, r.add, (141, "probe", (), 0)).code == "name"
    assert raises(env.RegistryError, r.add, (140, "other", (), 0)).code == "code"
    assert raises(env.RegistryError, r.add, (142, "bad_min", ("n", env.UINT, 9), 2)).code == "field"
    assert raises(env.RegistryError, r.add, (143, "bad_field", ("n", env.UINT), 1)).code == "field"
    assert raises(env.RegistryError, r.add, (144, "nested", (("n", env.UINT, 9),), 1)).code == "field"
    assert raises(env.RegistryError, r.add, (145, "no_name", (9, env.UINT, 9), 1)).code == "field"
    assert env.field_index(t, "s") == 1 and env.field_index(t, "x") == -1
    assert r.decode(r.encode("probe", 7, "ab"))["s"] == "ab"
    assert raises(env.RegistryError, r.type, "absent").code == env.E_TYPE
    assert r.decode(r.encode("probe", 7)).values == [7]
